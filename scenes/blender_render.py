"""Render worker that runs INSIDE Blender: ``blender -b --factory-startup --python scenes/blender_render.py``.

It reads one JSON job per line on stdin, builds the scene (ground with the four boundary lines,
objects, lamps, camera) and renders it with Cycles to ``job["out"]`` (written to a temporary file
and renamed, so the PNG is complete or absent). For every job it prints one line
``TVRJOB {"id": ..., "ok": true}`` (or ``"ok": false, "error": ...``) on stdout; Blender's own
output is other lines. The job format is built by ``tvr_gym/render/blender.py``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import traceback

import bpy  # type: ignore[import-not-found]
from mathutils import Vector  # type: ignore[import-not-found]

MARK = "TVRJOB "


def reply(payload: dict) -> None:
    sys.stdout.write(MARK + json.dumps(payload) + "\n")
    sys.stdout.flush()


def clear_scene() -> None:
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj, do_unlink=True)
    for collection in (bpy.data.meshes, bpy.data.materials, bpy.data.lights, bpy.data.cameras):
        for block in list(collection):
            collection.remove(block)


def principled(name: str, color, metallic: float, roughness: float, specular: float = 0.5):
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    bsdf.inputs["Base Color"].default_value = (*color, 1.0)
    bsdf.inputs["Metallic"].default_value = metallic
    bsdf.inputs["Roughness"].default_value = roughness
    bsdf.inputs["Specular"].default_value = specular
    return mat


def glass(name: str, color, ior: float, roughness: float):
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.remove(nodes["Principled BSDF"])
    node = nodes.new("ShaderNodeBsdfGlass")
    node.inputs["Color"].default_value = (*color, 1.0)
    node.inputs["IOR"].default_value = ior
    node.inputs["Roughness"].default_value = roughness
    links.new(node.outputs["BSDF"], nodes["Material Output"].inputs["Surface"])
    return mat


def material_for(obj: dict, k: int):
    m = obj["material"]
    if m["kind"] == "dielectric":
        return glass(f"glass{k}", obj["color"], m["ior"], m["roughness"])
    if m["kind"] == "conductor":
        return principled(f"metal{k}", obj["color"], 1.0, m["roughness"])
    return principled(f"rubber{k}", obj["color"], 0.0, m["roughness"], specular=0.3)


def add_object(obj: dict, k: int) -> None:
    x, y, z = obj["center"]
    r, half = obj["radius"], obj["half"]
    if obj["shape"] == "cube":
        bpy.ops.mesh.primitive_cube_add(size=2.0 * half, location=(x, y, z))
    elif obj["shape"] == "sphere":
        bpy.ops.mesh.primitive_uv_sphere_add(radius=r, segments=64, ring_count=32, location=(x, y, z))
        bpy.ops.object.shade_smooth()
    else:
        bpy.ops.mesh.primitive_cylinder_add(radius=r, depth=2.0 * r, vertices=64, location=(x, y, z))
        bpy.ops.object.shade_smooth()
    ob = bpy.context.active_object
    ob.rotation_euler = (0.0, 0.0, math.radians(obj["rotation_deg"]))
    ob.data.materials.append(material_for(obj, k))


def add_ground(ground: dict) -> None:
    bpy.ops.mesh.primitive_plane_add(size=2.0 * ground["extent"], location=(0.0, 0.0, 0.0))
    bpy.context.active_object.data.materials.append(principled("ground", ground["color"], 0.0, 0.9, 0.2))
    line = principled("line", ground["line_color"], 0.0, 0.9, 0.2)
    s, w = ground["square"], ground["line_width"]
    for cx, cy, sx, sy in (
        (s, 0.0, w, 2 * s + w),
        (-s, 0.0, w, 2 * s + w),
        (0.0, s, 2 * s + w, w),
        (0.0, -s, 2 * s + w, w),
    ):
        bpy.ops.mesh.primitive_plane_add(size=1.0, location=(cx, cy, 1e-3))
        ob = bpy.context.active_object
        ob.scale = (sx, sy, 1.0)
        ob.data.materials.append(line)


def aim(ob, target) -> None:
    direction = Vector(target) - ob.location
    ob.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()


def add_lamps(lamps: list[dict]) -> None:
    for k, lamp in enumerate(lamps):
        if lamp.get("location") is not None:
            data = bpy.data.lights.new(f"lamp{k}", type="AREA")
            data.energy = lamp["power"]
            data.size = lamp["size"]
            ob = bpy.data.objects.new(f"lamp{k}", data)
            ob.location = lamp["location"]
            aim(ob, (0.0, 0.0, 0.0))
        else:
            data = bpy.data.lights.new(f"lamp{k}", type="SUN")
            data.energy = lamp["power"]
            ob = bpy.data.objects.new(f"lamp{k}", data)
            aim(ob, tuple(-v for v in lamp["to_light"]))
            ob.location = (0.0, 0.0, 10.0)
        data.color = lamp["color"]
        bpy.context.scene.collection.objects.link(ob)


def add_camera(cam: dict) -> None:
    data = bpy.data.cameras.new("camera")
    data.lens = cam["focal_length_mm"]
    data.sensor_width = cam["sensor_width_mm"]
    data.sensor_fit = "HORIZONTAL"
    ob = bpy.data.objects.new("camera", data)
    ob.location = cam["location"]
    aim(ob, cam["target"])
    bpy.context.scene.collection.objects.link(ob)
    bpy.context.scene.camera = ob


def configure(job: dict) -> None:
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = int(job["samples"])
    scene.cycles.use_denoising = False
    scene.render.resolution_x, scene.render.resolution_y = job["size"]
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGB"
    scene.view_settings.view_transform = "Standard"
    if job.get("threads"):
        scene.render.threads_mode = "FIXED"
        scene.render.threads = int(job["threads"])
    world = scene.world or bpy.data.worlds.new("world")
    scene.world = world
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (*job["background"], 1.0)
    world.node_tree.nodes["Background"].inputs["Strength"].default_value = 1.0


def render(job: dict) -> None:
    clear_scene()
    configure(job)
    add_ground(job["ground"])
    for k, obj in enumerate(job["objects"]):
        add_object(obj, k)
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
