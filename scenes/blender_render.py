"""Render worker that runs INSIDE Blender: ``blender -b --factory-startup --python scenes/blender_render.py``.

It reads one JSON job per line on stdin, builds the official TRANCE studio from the job's numbers
(the stage sheet, the four boundary lines, area lamps and a sun, a black world), adds the objects
with the official Cycles node setups, and renders to ``job["out"]`` (written to a temporary file
and renamed, so the PNG is complete or absent). For every job it prints one line
``TVRJOB {"id": ..., "ok": true}`` (or ``"ok": false, "error": ...``) on stdout; Blender's own
output is other lines. The job format is built by ``tvr_gym/render/blender.py``; nothing here
carries a number of its own.
"""

from __future__ import annotations

import json
import math
import os
import sys
import traceback

import bmesh  # type: ignore[import-not-found]
import bpy  # type: ignore[import-not-found]
from mathutils import Vector  # type: ignore[import-not-found]

MARK = "TVRJOB "
_MESHES: dict[str, object] = {}
"""Unit shape meshes and the stage, built once per worker and keyed by the job's description of them."""


def reply(payload: dict) -> None:
    sys.stdout.write(MARK + json.dumps(payload) + "\n")
    sys.stdout.flush()


def clear_scene() -> None:
    """Remove every object, material, light and camera, and the meshes but the cached ones (fake users)."""
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj, do_unlink=True)
    for mesh in list(bpy.data.meshes):
        if not mesh.use_fake_user:
            bpy.data.meshes.remove(mesh)
    for collection in (bpy.data.materials, bpy.data.lights, bpy.data.cameras):
        for block in list(collection):
            collection.remove(block)


# -- materials --------------------------------------------------------------------------------------


def _new_material(name: str):
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nodes = mat.node_tree.nodes
    for node in list(nodes):
        if node.bl_idname != "ShaderNodeOutputMaterial":
            nodes.remove(node)
    return mat, nodes, mat.node_tree.links, nodes["Material Output"]


def diffuse_material(name: str, albedo: float):
    mat, nodes, links, out = _new_material(name)
    node = nodes.new("ShaderNodeBsdfDiffuse")
    node.inputs["Color"].default_value = (albedo, albedo, albedo, 1.0)
    links.new(node.outputs["BSDF"], out.inputs["Surface"])
    return mat


def _fresnel(nodes, ior: float):
    node = nodes.new("ShaderNodeFresnel")
    node.inputs["IOR"].default_value = ior
    return node.outputs["Fac"]


def _mix(nodes, links, fac, first, second):
    """MixShader: ``first`` at fac 0, ``second`` at fac 1; ``fac`` is a number or a socket; a shader may be None."""
    mix = nodes.new("ShaderNodeMixShader")
    if isinstance(fac, (int, float)):
        mix.inputs["Fac"].default_value = fac
    else:
        links.new(fac, mix.inputs["Fac"])
    for k, shader in ((1, first), (2, second)):
        if shader is not None:
            links.new(shader, mix.inputs[k])
    return mix.outputs["Shader"]


def rubber(name: str, color, c: dict):
    """Fresnel-mixed glossy coat over a Fresnel mix of diffuse and velvet (the official Rubber group;
    the glossy colour is the node's default, as there)."""
    mat, nodes, links, out = _new_material(name)
    rgba = (*color, 1.0)
    diffuse = nodes.new("ShaderNodeBsdfDiffuse")
    diffuse.inputs["Color"].default_value = rgba
    velvet = nodes.new("ShaderNodeBsdfVelvet")
    velvet.inputs["Color"].default_value = rgba
    velvet.inputs["Sigma"].default_value = c["velvet_sigma"]
    glossy = nodes.new("ShaderNodeBsdfGlossy")
    glossy.distribution = c["glossy"].upper()
    glossy.inputs["Roughness"].default_value = c["glossy_roughness"]
    base = _mix(nodes, links, _fresnel(nodes, c["velvet_fresnel_ior"]), diffuse.outputs["BSDF"], velvet.outputs["BSDF"])
    coat = _mix(nodes, links, _fresnel(nodes, c["glossy_fresnel_ior"]), base, glossy.outputs["BSDF"])
    links.new(coat, out.inputs["Surface"])
    return mat


def metal(name: str, color, c: dict):
    """Two coloured anisotropic lobes mixed by weight (the official Metal group: no diffuse)."""
    mat, nodes, links, out = _new_material(name)
    shaders = []
    for lobe in c["lobes"]:
        node = nodes.new("ShaderNodeBsdfAnisotropic")
        node.distribution = lobe["distribution"].upper()
        node.inputs["Color"].default_value = (*color, 1.0)
        node.inputs["Roughness"].default_value = lobe["roughness"]
        node.inputs["Anisotropy"].default_value = lobe["anisotropy"]
        shaders.append((lobe["weight"], node.outputs["BSDF"]))
    (_, first), (w2, second) = shaders
    links.new(_mix(nodes, links, w2, first, second), out.inputs["Surface"])
    return mat


def glass(name: str, color, c: dict):
    """Glass to camera and glossy rays, transparent to diffuse rays, opaque and black to shadow rays."""
    mat, nodes, links, out = _new_material(name)
    rgba = (*color, 1.0)
    path = nodes.new("ShaderNodeLightPath")
    bsdf = nodes.new("ShaderNodeBsdfGlass")
    bsdf.distribution = c["distribution"].upper()
    bsdf.inputs["Color"].default_value = rgba
    bsdf.inputs["Roughness"].default_value = c["roughness"]
    bsdf.inputs["IOR"].default_value = c["ior"]
    transparent = nodes.new("ShaderNodeBsdfTransparent")
    transparent.inputs["Color"].default_value = rgba
    seen = _mix(nodes, links, path.outputs["Is Diffuse Ray"], bsdf.outputs["BSDF"], transparent.outputs["BSDF"])
    links.new(_mix(nodes, links, path.outputs["Is Shadow Ray"], seen, None), out.inputs["Surface"])
    return mat


MATERIALS = {"rubber": rubber, "metal": metal, "glass": glass}


# -- meshes -----------------------------------------------------------------------------------------


def _cached(key: str, build):
    mesh = _MESHES.get(key)
    if mesh is None:
        mesh = _MESHES[key] = build()
        mesh.use_fake_user = True
    return mesh


def _bevelled(name: str, bm, bevel: dict):
    """A mesh from ``bm`` with its sharp edges (right angles, not the facets of a round side)
    rounded; smooth shaded with hardened normals, so flat faces stay flat."""
    mesh = bpy.data.meshes.new(name)
    bm.to_mesh(mesh)
    bm.free()
    ob = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(ob)
    for poly in mesh.polygons:
        poly.use_smooth = True
    mesh.use_auto_smooth = True
    mesh.auto_smooth_angle = math.pi
    mod = ob.modifiers.new("bevel", "BEVEL")
    mod.width = bevel["width"]
    mod.segments = int(bevel["segments"])
    mod.profile = bevel["profile"]
    mod.limit_method = "ANGLE"
    mod.angle_limit = math.pi / 4.0
    mod.harden_normals = True
    depsgraph = bpy.context.evaluated_depsgraph_get()
    baked = bpy.data.meshes.new_from_object(
        ob.evaluated_get(depsgraph), preserve_all_data_layers=True, depsgraph=depsgraph
    )
    bpy.data.objects.remove(ob, do_unlink=True)
    bpy.data.meshes.remove(mesh)
    baked.name = name
    return baked


def unit_mesh(shape: str, spec: dict):
    """The unit shape (extent [-1, 1] on every axis) as the official meshes: bevelled cube and
    cylinder, smooth UV sphere."""

    def build():
        bm = bmesh.new()
        if shape == "sphere":
            bmesh.ops.create_uvsphere(bm, u_segments=int(spec["segments"]), v_segments=int(spec["rings"]), radius=1.0)
            mesh = bpy.data.meshes.new("sphere")
            bm.to_mesh(mesh)
            bm.free()
            for poly in mesh.polygons:
                poly.use_smooth = True
            return mesh
        if shape == "cube":
            bmesh.ops.create_cube(bm, size=2.0)
        else:
            bmesh.ops.create_cone(
                bm, cap_ends=True, cap_tris=False, segments=int(spec["segments"]), radius1=1.0, radius2=1.0, depth=2.0
            )
        return _bevelled(shape, bm, spec["bevel"])

    return _cached(f"{shape}:{json.dumps(spec, sort_keys=True)}", build)


def stage_mesh(stage: dict):
    """The studio sheet: the profile z(s) swept along the lateral axis, smooth shaded."""

    def build():
        ux, uy = stage["uphill"]
        lx, ly = stage["lateral"]
        profile = stage["profile"]
        verts = [(s * ux + t * lx, s * uy + t * ly, z) for s, z in profile for t in stage["lateral_extent"]]
        faces = [(2 * k, 2 * k + 1, 2 * k + 3, 2 * k + 2) for k in range(len(profile) - 1)]
        mesh = bpy.data.meshes.new("stage")
        mesh.from_pydata(verts, [], faces)
        for poly in mesh.polygons:
            poly.use_smooth = True
        mesh.update()
        return mesh

    return _cached(f"stage:{json.dumps(stage, sort_keys=True)}", build)


# -- scene --------------------------------------------------------------------------------------------


def link(name: str, data):
    ob = bpy.data.objects.new(name, data)
    bpy.context.scene.collection.objects.link(ob)
    return ob


def _sheet_z(stage: dict, x: float, y: float) -> float:
    """Height of the stage sheet at (x, y): the profile, piecewise linear in s = dot((x, y), uphill)."""
    s = x * stage["uphill"][0] + y * stage["uphill"][1]
    profile = stage["profile"]
    for (s0, z0), (s1, z1) in zip(profile, profile[1:]):
        if s <= s1:
            return z0 + (z1 - z0) * min(max((s - s0) / (s1 - s0), 0.0), 1.0)
    return profile[-1][1]


def line_mesh(name: str, stage: dict, a, b, width: float, height: float):
    """A strip ``width`` wide from a to b floating ``height`` above the sheet (split where the profile bends)."""
    ux, uy = stage["uphill"]
    sa, sb = a[0] * ux + a[1] * uy, b[0] * ux + b[1] * uy
    ts = {0.0, 1.0}
    if abs(sb - sa) > 1e-9:
        ts |= {(s - sa) / (sb - sa) for s, _ in stage["profile"] if 0.0 < (s - sa) / (sb - sa) < 1.0}
    dx, dy = b[0] - a[0], b[1] - a[1]
    norm = math.hypot(dx, dy)
    nx, ny = -dy / norm * width / 2.0, dx / norm * width / 2.0
    verts, faces = [], []
    for k, t in enumerate(sorted(ts)):
        x, y = a[0] + t * dx, a[1] + t * dy
        z = _sheet_z(stage, x, y) + height
        verts += [(x - nx, y - ny, z), (x + nx, y + ny, z)]
        if k:
            faces.append((2 * k - 2, 2 * k - 1, 2 * k + 1, 2 * k))
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts, [], faces)
    return mesh


def add_stage(stage: dict, lines: dict) -> None:
    """The stage sheet (diffuse) and the four boundary lines of the visible square just above it
    (diffuse, hidden from glossy rays, casting no shadow)."""
    ground = link("stage", stage_mesh(stage))
    ground.data.materials.clear()
    ground.data.materials.append(diffuse_material("stage", stage["albedo"]))
    line_mat = diffuse_material("line", lines["albedo"])
    h, w = lines["half"], lines["width"]
    corners = ((-h, -h), (h, -h), (h, h), (-h, h))
    for k in range(4):
        a, b = corners[k], corners[(k + 1) % 4]
        # extend by half the width so the corners close
        ext = [(q - p) / (2.0 * h) * w / 2.0 for p, q in zip(a, b)]
        a = (a[0] - ext[0], a[1] - ext[1])
        b = (b[0] + ext[0], b[1] + ext[1])
        mesh = line_mesh(f"line{k}", stage, a, b, w, lines["height"])
        mesh.materials.append(line_mat)
        ob = link(f"line{k}", mesh)
        ob.visible_glossy = False
        ob.visible_shadow = False


def add_object(obj: dict, k: int, materials: dict, meshes: dict) -> None:
    mesh = unit_mesh(obj["shape"], meshes[obj["shape"]])
    ob = link(f"object{k}", mesh)
    ob.location = obj["center"]
    ob.scale = obj["scale"]
    ob.rotation_euler = (0.0, 0.0, math.radians(obj["rotation_deg"]))
    kind = obj["material"]
    # the material sits on the object's slot, so objects share the unit mesh
    if not mesh.materials:
        mesh.materials.append(None)
    ob.material_slots[0].link = "OBJECT"
    ob.material_slots[0].material = MATERIALS[kind](f"{kind}{k}", obj["color"], materials[kind])


def aim(ob, direction) -> None:
    ob.rotation_euler = Vector(direction).to_track_quat("-Z", "Y").to_euler()


def add_lamps(lamps: list[dict]) -> None:
    for k, lamp in enumerate(lamps):
        if lamp["kind"] == "area":
            data = bpy.data.lights.new(f"lamp{k}", type="AREA")
            data.shape = "SQUARE"
            data.size = lamp["size"]
            ob = link(f"lamp{k}", data)
            ob.location = lamp["location"]
            aim(ob, [-v for v in lamp["location"]])
        else:
            data = bpy.data.lights.new(f"lamp{k}", type="SUN")
            data.angle = math.radians(lamp["angle_deg"])
            ob = link(f"lamp{k}", data)
            aim(ob, lamp["direction"])
        data.energy = lamp["power"]
        data.color = lamp["color"]


def add_camera(cam: dict) -> None:
    data = bpy.data.cameras.new("camera")
    data.lens = cam["focal_length_mm"]
    data.sensor_width = cam["sensor_width_mm"]
    data.sensor_fit = "HORIZONTAL"
    ob = link("camera", data)
    ob.location = cam["location"]
    aim(ob, Vector(cam["target"]) - Vector(cam["location"]))
    bpy.context.scene.camera = ob


def configure(job: dict) -> None:
    scene = bpy.context.scene
    c = job["cycles"]
    scene.render.engine = "CYCLES"
    cyc = scene.cycles
    cyc.device = "CPU"
    cyc.samples = int(job["samples"])
    cyc.use_adaptive_sampling = False
    cyc.use_denoising = False
    cyc.max_bounces = int(c["max_bounces"])
    cyc.min_light_bounces = int(c["min_bounces"])
    cyc.transparent_max_bounces = int(c["transparent_bounces"])
    cyc.min_transparent_bounces = int(c["transparent_bounces"])
    cyc.blur_glossy = float(c["blur_glossy"])
    cyc.pixel_filter_type = "BLACKMAN_HARRIS"  # the official filter, and no clamping: as the official scene
    cyc.filter_width = float(c["filter_width"])
    cyc.sample_clamp_direct = cyc.sample_clamp_indirect = 0.0
    cyc.seed = 0
    scene.render.resolution_x, scene.render.resolution_y = job["size"]
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = False
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGB"
    scene.render.image_settings.color_depth = "8"
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0
    scene.display_settings.display_device = "sRGB"
    if job.get("threads"):
        scene.render.threads_mode = "FIXED"
        scene.render.threads = int(job["threads"])
    else:
        scene.render.threads_mode = "AUTO"
    world = scene.world or bpy.data.worlds.new("world")
    scene.world = world
    world.use_nodes = True
    background = world.node_tree.nodes["Background"]
    background.inputs["Color"].default_value = (*job["world"], 1.0)
    background.inputs["Strength"].default_value = 1.0


def render(job: dict) -> None:
    clear_scene()
    configure(job)
    add_stage(job["stage"], job["lines"])
    for k, obj in enumerate(job["objects"]):
        add_object(obj, k, job["materials"], job["meshes"])
    add_lamps(job["lamps"])
    add_camera(job["camera"])
    out = job["out"]
    tmp = out + ".part.png"
    bpy.context.scene.render.filepath = tmp
    bpy.ops.render.render(write_still=True)
    os.replace(tmp, out)


def main() -> None:
    reply({"id": None, "ok": True, "ready": True, "blender": bpy.app.version_string})
    for line in sys.stdin:
        if not line.strip():
            continue
        job_id = None
        try:
            job = json.loads(line)
            job_id = job.get("id")
            render(job)
            reply({"id": job_id, "ok": True})
        except Exception as exc:  # report and keep serving
            reply({"id": job_id, "ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()})


if __name__ == "__main__":
    main()
