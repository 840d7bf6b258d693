"""The ``gl`` renderer: OpenGL 3.3 through moderngl on a headless EGL context (Mesa llvmpipe or a GPU).

One context per process (:func:`shared_context`) holds the programs, the unit meshes and the shadow
map; each :class:`GLRenderer` adds its own framebuffers. A frame is a shadow-map pass from the shadow
lamp, a 4x MSAA colour pass (opaque objects front to back, the ground, then glass back to front) and
a resolve into a preallocated buffer. ``render_mask`` is a flat pass without MSAA that writes
``index + 1`` into an 8-bit attachment.
"""

from __future__ import annotations

import importlib.util
import math
import threading

import numpy as np

from tvr_gym.render.base import (
    GROUND,
    RENDER,
    Primitive,
    Renderer,
    check_inputs,
    lamp_lights,
    linear_to_srgb,
    material_params,
    primitives,
)
from tvr_gym.render.geometry import ground_grid, unit_mesh
from tvr_gym.render.rig import Camera, Lamp
from tvr_gym.scene import State
from tvr_gym.spec import SPEC

_LIGHT_UNIFORMS = """
uniform vec3 u_lamp_pos[3];
uniform vec3 u_lamp_rad[3];
uniform vec3 u_lamp_aim[3];
uniform int u_shadow_lamp;
uniform vec3 u_sun_dir;
uniform vec3 u_sun_rad;
uniform float u_ambient;
"""

_ENCODE = """
vec3 encode(vec3 c) {
    c = clamp(c, 0.0, 1.0);
    return mix(c * 12.92, 1.055 * pow(c, vec3(1.0 / 2.4)) - 0.055, step(0.0031308, c));
}
"""

_SHADOW_LOOKUP = """
uniform sampler2DShadow u_shadow_map;
uniform float u_shadow_on;
uniform float u_shadow_strength;
uniform float u_shadow_radius;
float shadow_factor(vec4 light_pos) {
    vec3 s = light_pos.xyz / light_pos.w * 0.5 + 0.5;
    if (u_shadow_on < 0.5 || s.x <= 0.0 || s.x >= 1.0 || s.y <= 0.0 || s.y >= 1.0 || s.z >= 1.0) return 1.0;
    float r = u_shadow_radius;
    float lit = texture(u_shadow_map, vec3(s.xy + vec2(-r, -0.4 * r), s.z))
              + texture(u_shadow_map, vec3(s.xy + vec2(0.4 * r, -r), s.z))
              + texture(u_shadow_map, vec3(s.xy + vec2(r, 0.4 * r), s.z))
              + texture(u_shadow_map, vec3(s.xy + vec2(-0.4 * r, r), s.z));
    return 1.0 - u_shadow_strength * (1.0 - 0.25 * lit);
}
"""

_GROUND_VERTEX = """
#version 330
uniform mat4 u_viewproj;
uniform mat4 u_light_vp;
in vec3 in_pos;
out vec3 v_world;
out vec4 v_light;
void main() {
    v_world = in_pos;
    v_light = u_light_vp * vec4(in_pos, 1.0);
    gl_Position = u_viewproj * vec4(in_pos, 1.0);
}
"""

_IRRADIANCE_VERTEX = """
#version 330
uniform float u_irr_extent;
in vec2 in_pos;
out vec3 v_world;
void main() {
    v_world = vec3(in_pos * u_irr_extent, 0.0);
    gl_Position = vec4(in_pos, 0.0, 1.0);
}
"""

_IRRADIANCE_FRAGMENT = (
    """
#version 330
in vec3 v_world;
out vec4 f_irradiance;         // rgb: light from all but the shadow lamp; a: the shadow lamp's share
"""
    + _LIGHT_UNIFORMS
    + """
void main() {
    vec3 rest = vec3(u_ambient) + u_sun_rad * max(u_sun_dir.z, 0.0);
    float key = 0.0;
    for (int i = 0; i < 3; ++i) {
        vec3 to_lamp = u_lamp_pos[i] - v_world;
        float inv = inversesqrt(dot(to_lamp, to_lamp));
        vec3 l = to_lamp * inv;
        float g = clamp(-dot(l, u_lamp_aim[i]), 0.0, 1.0) * max(l.z, 0.0) * inv * inv;
        if (i == u_shadow_lamp) key = g; else rest += u_lamp_rad[i] * g;
    }
    f_irradiance = vec4(rest, key);
}
"""
)

_GROUND_FRAGMENT = (
    """
#version 330
uniform vec3 u_ground;
uniform vec3 u_line;
uniform float u_square;
uniform float u_line_half;
uniform sampler2D u_irradiance;
uniform float u_irr_extent;
uniform vec3 u_key_rad;
in vec3 v_world;
in vec4 v_light;
out vec4 f_color;
"""
    + _SHADOW_LOOKUP
    + _ENCODE
    + """
void main() {
    vec2 a = abs(v_world.xy);
    vec2 w = max(fwidth(v_world.xy), vec2(1e-5));
    vec2 cov = clamp((u_line_half - abs(a - u_square)) / w + 0.5, 0.0, 1.0);
    float reach = u_square + u_line_half;
    float line = max(cov.x * step(a.y, reach), cov.y * step(a.x, reach));
    vec3 albedo = mix(u_ground, u_line, line);
    vec4 irr = texture(u_irradiance, v_world.xy / (2.0 * u_irr_extent) + 0.5);
    f_color = vec4(encode(albedo * (irr.rgb + u_key_rad * (irr.a * shadow_factor(v_light)))), 1.0);
}
"""
)

_VERTEX = """
#version 330
uniform mat4 u_viewproj;
uniform mat4 u_light_vp;
uniform vec3 u_center;
uniform float u_scale;
uniform vec2 u_rot;
in vec3 in_pos;
in vec3 in_normal;
out vec3 v_world;
out vec3 v_normal;
out vec4 v_light;
void main() {
    vec3 p = in_pos * u_scale;
    vec3 world = vec3(u_rot.x * p.x - u_rot.y * p.y, u_rot.y * p.x + u_rot.x * p.y, p.z) + u_center;
    v_normal = vec3(u_rot.x * in_normal.x - u_rot.y * in_normal.y, u_rot.y * in_normal.x + u_rot.x * in_normal.y,
                    in_normal.z);
    v_world = world;
    v_light = u_light_vp * vec4(world, 1.0);
    gl_Position = u_viewproj * vec4(world, 1.0);
}
"""

_FRAGMENT = (
    """
#version 330
uniform float u_glass;         // 0 opaque, 1 glass surface (added over the transmission pass)
uniform float u_shiny;         // 1 when the material has highlights (specular >= render.min_specular)
uniform vec3 u_albedo;
uniform vec4 u_mat;            // specular, shininess, reflect, alpha
uniform vec3 u_eye;
uniform vec3 u_env_zenith;
uniform vec3 u_env_horizon;
uniform vec3 u_env_ground;
uniform float u_glass_fresnel;
uniform float u_glass_diffuse;
in vec3 v_world;
in vec3 v_normal;
in vec4 v_light;
out vec4 f_color;
"""
    + _LIGHT_UNIFORMS
    + _SHADOW_LOOKUP
    + _ENCODE
    + """
vec3 environment(vec3 d) {
    vec3 sky = mix(u_env_horizon, u_env_zenith, clamp(d.z, 0.0, 1.0));
    vec3 floor_ = mix(u_env_ground, u_env_horizon, clamp(1.0 + 4.0 * d.z, 0.0, 1.0));
    return d.z >= 0.0 ? sky : floor_;
}

void main() {
    vec3 n = normalize(v_normal);
    float shadow = shadow_factor(v_light);
    vec3 diffuse = vec3(u_ambient * (0.6 + 0.4 * clamp(n.z, 0.0, 1.0))) + u_sun_rad * max(dot(n, u_sun_dir), 0.0);
    vec3 rad[3];
    vec3 dir[3];
    for (int i = 0; i < 3; ++i) {
        vec3 to_lamp = u_lamp_pos[i] - v_world;
        float inv = inversesqrt(dot(to_lamp, to_lamp));
        dir[i] = to_lamp * inv;
        rad[i] = u_lamp_rad[i] * (clamp(-dot(dir[i], u_lamp_aim[i]), 0.0, 1.0) * inv * inv);
        rad[i] *= i == u_shadow_lamp ? shadow : 1.0;
        diffuse += rad[i] * max(dot(n, dir[i]), 0.0);
    }
    vec3 color = u_albedo * diffuse * (1.0 - u_mat.z);
    if (u_shiny > 0.5) {
        vec3 view = normalize(u_eye - v_world);
        vec3 spec = vec3(0.0);
        for (int i = 0; i < 3; ++i) {
            float facing = float(dot(n, dir[i]) > 0.0);
            spec += rad[i] * (facing * exp2(u_mat.y * log2(max(dot(n, normalize(dir[i] + view)), 1e-4))));
        }
        vec3 mirror = environment(reflect(-view, n));
        if (u_glass > 0.5) {
            float rim = pow(1.0 - clamp(dot(n, view), 0.0, 1.0), 3.0) * u_glass_fresnel;
            color = u_albedo * diffuse * u_glass_diffuse * (1.0 - rim) + u_mat.x * spec + rim * mirror;
        } else {
            color += u_mat.x * spec + u_mat.z * u_albedo * mirror;
        }
    }
    f_color = vec4(encode(color), 1.0);
}
"""
)

_TRANSMISSION_FRAGMENT = """
#version 330
uniform vec3 u_albedo;
uniform vec3 u_eye;
uniform float u_alpha;
uniform float u_glass_tint;
uniform float u_glass_fresnel;
in vec3 v_world;
in vec3 v_normal;
in vec4 v_light;
out vec4 f_color;
void main() {
    float rim = pow(1.0 - clamp(dot(normalize(v_normal), normalize(u_eye - v_world)), 0.0, 1.0), 3.0) * u_glass_fresnel;
    vec3 t = clamp(u_albedo * u_albedo * (u_glass_tint * (1.0 - u_alpha)), 0.0, 1.0);
    f_color = vec4(pow(t, vec3(1.0 / 2.2)) * (1.0 - rim), 1.0);
}
"""

_SHADOW_VERTEX = """
#version 330
uniform mat4 u_light_vp;
uniform vec3 u_center;
uniform float u_scale;
uniform vec2 u_rot;
in vec3 in_pos;
void main() {
    vec3 p = in_pos * u_scale;
    vec3 world = vec3(u_rot.x * p.x - u_rot.y * p.y, u_rot.y * p.x + u_rot.x * p.y, p.z) + u_center;
    gl_Position = u_light_vp * vec4(world, 1.0);
}
"""

_MASK_VERTEX = """
#version 330
uniform mat4 u_viewproj;
uniform vec3 u_center;
uniform float u_scale;
uniform vec2 u_rot;
in vec3 in_pos;
void main() {
    vec3 p = in_pos * u_scale;
    vec3 world = vec3(u_rot.x * p.x - u_rot.y * p.y, u_rot.y * p.x + u_rot.x * p.y, p.z) + u_center;
    gl_Position = u_viewproj * vec4(world, 1.0);
}
"""

_MASK_FRAGMENT = """
#version 330
uniform float u_code;
out vec4 f_code;
void main() { f_code = vec4(u_code, 0.0, 0.0, 1.0); }
"""

_EMPTY_FRAGMENT = """
#version 330
void main() {}
"""

_FLIP_Y = np.diag([1.0, -1.0, 1.0, 1.0])
"""Render upside down so that reading rows bottom-up gives a top-down image."""


def _mat_bytes(m: np.ndarray) -> bytes:
    return np.ascontiguousarray(m.T, dtype=np.float32).tobytes()


def _load_triton_first() -> None:
    """Import triton (torch's compiler) before Mesa's llvmpipe is loaded, when it is installed.

    Both bring their own LLVM. Importing triton after a gl context exists (as torch._dynamo,
    torchvision and transformers do on first use) crashes the process; the other order works.
    """
    if importlib.util.find_spec("triton") is not None:
        try:
            import triton  # noqa: F401
        except Exception:  # noqa: BLE001 - a broken triton cannot conflict with llvmpipe
            pass


class _Shared:
    """The process-wide context and everything that does not depend on the image size."""

    def __init__(self) -> None:
        _load_triton_first()
        import moderngl

        self.mgl = moderngl
        self.ctx = moderngl.create_standalone_context(backend="egl")
        ctx = self.ctx
        self._buffers: list = []
        self.lit = ctx.program(vertex_shader=_VERTEX, fragment_shader=_FRAGMENT)
        self.ground_prog = ctx.program(vertex_shader=_GROUND_VERTEX, fragment_shader=_GROUND_FRAGMENT)
        self.irr_prog = ctx.program(vertex_shader=_IRRADIANCE_VERTEX, fragment_shader=_IRRADIANCE_FRAGMENT)
        quad = ctx.buffer(np.array([-1, -1, 1, -1, 1, 1, -1, -1, 1, 1, -1, 1], dtype=np.float32).tobytes())
        self._buffers.append(quad)
        self.irr_quad = ctx.vertex_array(self.irr_prog, [(quad, "2f", "in_pos")])
        n_irr = int(RENDER["irradiance_texels"])
        self.irr_tex = ctx.texture((n_irr, n_irr), 4, dtype="f2")
        self.irr_tex.filter = (moderngl.LINEAR, moderngl.LINEAR)
        self.irr_tex.repeat_x = self.irr_tex.repeat_y = False
        self.irr_fbo = ctx.framebuffer(color_attachments=[self.irr_tex])
        self.transmit = ctx.program(vertex_shader=_VERTEX, fragment_shader=_TRANSMISSION_FRAGMENT)
        self.depth = ctx.program(vertex_shader=_SHADOW_VERTEX, fragment_shader=_EMPTY_FRAGMENT)
        self.flat = ctx.program(vertex_shader=_MASK_VERTEX, fragment_shader=_MASK_FRAGMENT)
        self.vaos: dict[tuple[str, str, str], object] = {}
        for shape in SPEC.values["shape"]:
            for size in SPEC.values["size"]:
                vertices, tris = unit_mesh(shape, size)
                vbo, ibo = ctx.buffer(vertices.tobytes()), ctx.buffer(tris.tobytes())
                self._buffers += [vbo, ibo]
                for name, prog, layout in (
                    ("lit", self.lit, [(vbo, "3f 3f", "in_pos", "in_normal")]),
                    ("transmit", self.transmit, [(vbo, "3f 3f", "in_pos", "in_normal")]),
                    ("depth", self.depth, [(vbo, "3f 12x", "in_pos")]),
                    ("flat", self.flat, [(vbo, "3f 12x", "in_pos")]),
                ):
                    self.vaos[name, shape, size] = ctx.vertex_array(prog, layout, ibo, index_element_size=4)
        xyz, tris = ground_grid(float(GROUND["extent"]))
        gvbo, gibo = ctx.buffer(xyz.tobytes()), ctx.buffer(tris.tobytes())
        self._buffers += [gvbo, gibo]
        self.ground = ctx.vertex_array(
            self.ground_prog, [(gvbo, "3f", "in_pos")], index_buffer=gibo, index_element_size=4
        )
        n = int(RENDER["shadow_map_size"])
        self.shadow_size = n
        self.shadow_tex = ctx.depth_texture((n, n))
        self.shadow_tex.compare_func = "<="
        self.shadow_tex.filter = (moderngl.LINEAR, moderngl.LINEAR)
        self.shadow_fbo = ctx.framebuffer(depth_attachment=self.shadow_tex)
        self._static_uniforms()

    def _static_uniforms(self) -> None:
        env = RENDER["env"]
        for p in (self.lit, self.ground_prog):
            p["u_shadow_map"].value = 0
            p["u_shadow_strength"].value = float(RENDER["shadow_strength"])
            p["u_shadow_radius"].value = float(RENDER["shadow_softness"]) / self.shadow_size
        self.lit["u_ambient"].value = float(RENDER["ambient"])
        self.irr_lamps: tuple | None = None
        g = self.ground_prog
        g["u_irradiance"].value = 1
        g["u_irr_extent"].value = float(RENDER["irradiance_extent"])
        self.irr_prog["u_irr_extent"].value = float(RENDER["irradiance_extent"])
        self.irr_prog["u_ambient"].value = float(RENDER["ambient"])
        g["u_ground"].value = tuple(float(v) for v in GROUND["color"])
        g["u_line"].value = tuple(float(v) for v in GROUND["line_color"])
        g["u_square"].value = SPEC.visible_limit * SPEC.cell
        g["u_line_half"].value = float(GROUND["line_width"]) / 2.0
        p = self.lit
        p["u_env_zenith"].value = tuple(env["zenith"])
        p["u_env_horizon"].value = tuple(env["horizon"])
        p["u_env_ground"].value = tuple(env["ground"])
        p["u_glass_fresnel"].value = float(RENDER["glass_fresnel"])
        p["u_glass_diffuse"].value = float(RENDER["glass_diffuse"])
        self.transmit["u_glass_tint"].value = float(RENDER["glass_tint"])
        self.transmit["u_glass_fresnel"].value = float(RENDER["glass_fresnel"])
        self.clear_color = tuple(float(v) for v in linear_to_srgb(np.asarray(env["horizon"])))


_SHARED: _Shared | None = None
_SHARED_ERROR: Exception | None = None
_LOCK = threading.Lock()


def shared_context() -> _Shared:
    """The process-wide GL context and shared resources, created on first use.

    A failure (no EGL, no moderngl) is remembered and raised again without retrying.
    """
    global _SHARED, _SHARED_ERROR
    with _LOCK:
        if _SHARED is None:
            if _SHARED_ERROR is not None:
                raise RuntimeError(f"gl renderer unavailable: {_SHARED_ERROR}") from _SHARED_ERROR
            try:
                _SHARED = _Shared()
            except Exception as exc:
                _SHARED_ERROR = exc
                raise RuntimeError(
                    f"gl renderer unavailable ({type(exc).__name__}: {exc}). "
                    "Install the Mesa EGL driver (Debian: apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri) "
                    "or use make_renderer('numpy')."
                ) from exc
        return _SHARED


def _shadow_camera(position: np.ndarray) -> Camera:
    """A camera at the shadow lamp aimed at the origin with ``render.shadow_fov_deg`` (the same camera model)."""
    half = math.radians(float(RENDER["shadow_fov_deg"])) / 2.0
    return Camera(location=tuple(float(v) for v in position), focal_length_mm=0.5 / math.tan(half), sensor_width_mm=1.0)


class GLRenderer(Renderer):
    """OpenGL renderer with MSAA, soft shadow maps, shiny metal and blended glass."""

    name = "gl"

    def __init__(self, size: tuple[int, int] = (320, 240)) -> None:
        super().__init__(size)
        self._gl = shared_context()
        ctx = self._gl.ctx
        samples = min(int(RENDER["msaa_samples"]), int(ctx.max_samples))
        self._msaa = ctx.framebuffer(
            color_attachments=[ctx.renderbuffer(self.size, components=4, samples=samples)],
            depth_attachment=ctx.depth_renderbuffer(self.size, samples=samples),
        )
        self._resolved = ctx.framebuffer(color_attachments=[ctx.renderbuffer(self.size, components=4)])
        self._mask_fbo = ctx.framebuffer(
            color_attachments=[ctx.renderbuffer(self.size, components=1)],
            depth_attachment=ctx.depth_renderbuffer(self.size),
        )
        self._fbos = (self._msaa, self._resolved, self._mask_fbo)
        w, h = self.size
        self._pixels = bytearray(w * h * 3)
        self._codes = bytearray(w * h)

    # -- per-frame helpers -------------------------------------------------------------------
    def _viewproj(self, camera: Camera) -> bytes:
        m = _FLIP_Y @ camera.projection_matrix(self.size) @ camera.view_matrix()
        return _mat_bytes(m)

    @staticmethod
    def _place(prog, prim: Primitive) -> None:
        prog["u_center"].value = tuple(float(v) for v in prim.center)
        prog["u_scale"].value = prim.half
        prog["u_rot"].value = (math.cos(prim.angle), math.sin(prim.angle))

    def _shadow_pass(self, prims: list[Primitive], lights) -> bytes | None:
        caster = next((light for light in lights if light.casts_shadow), None)
        if caster is None or not prims:
            return None
        cam = _shadow_camera(caster.position)
        n = self._gl.shadow_size
        light_vp = _mat_bytes(cam.projection_matrix((n, n), near=1.0, far=40.0) @ cam.view_matrix())
        gl = self._gl
        gl.shadow_fbo.use()
        gl.shadow_fbo.clear(depth=1.0)
        gl.ctx.disable(gl.mgl.CULL_FACE)
        gl.ctx.polygon_offset = (2.0, 4.0)
        gl.depth["u_light_vp"].write(light_vp)
        for prim in prims:
            self._place(gl.depth, prim)
            gl.vaos["depth", prim.shape, prim.size].render()
        gl.ctx.polygon_offset = (0.0, 0.0)
        return light_vp

    def _set_lights(self, lights, camera: Camera, light_vp: bytes | None) -> None:
        lamps = [light for light in lights if light.position is not None][:3]
        pos = np.zeros((3, 3), dtype=np.float32)
        rad = np.zeros((3, 3), dtype=np.float32)
        aim = np.zeros((3, 3), dtype=np.float32)
        shadow_slot = -1
        for k, light in enumerate(lamps):
            pos[k], rad[k] = light.position, light.radiance
            aim[k] = -light.position / np.linalg.norm(light.position)
            if light.casts_shadow:
                shadow_slot = k
        sun = next((light for light in lights if light.position is None), None)
        sun_dir = tuple(float(v) for v in sun.direction) if sun else (0.0, 0.0, 1.0)
        sun_rad = tuple(float(v) for v in sun.radiance) if sun else (0.0, 0.0, 0.0)
        gl = self._gl
        for p in (gl.lit, gl.irr_prog):
            p["u_lamp_pos"].write(pos.tobytes())
            p["u_lamp_rad"].write(rad.tobytes())
            p["u_lamp_aim"].write(aim.tobytes())
            p["u_shadow_lamp"].value = shadow_slot
            p["u_sun_dir"].value = sun_dir
            p["u_sun_rad"].value = sun_rad
        gl.ground_prog["u_key_rad"].value = tuple(float(v) for v in rad[shadow_slot]) if shadow_slot >= 0 else (0, 0, 0)
        viewproj = self._viewproj(camera)
        for p in (gl.lit, gl.ground_prog):
            p["u_viewproj"].write(viewproj)
            p["u_shadow_on"].value = 1.0 if light_vp is not None else 0.0
            if light_vp is not None:
                p["u_light_vp"].write(light_vp)
        lamps_key = (pos.tobytes(), rad.tobytes(), shadow_slot, sun_dir, sun_rad)
        if gl.irr_lamps != lamps_key:  # the ground's irradiance depends on the lamps only
            gl.irr_fbo.use()
            gl.irr_quad.render()
            gl.irr_lamps = lamps_key
        eye = tuple(float(v) for v in camera.location)
        self._gl.lit["u_eye"].value = eye
        self._gl.transmit["u_eye"].value = eye
        self._gl.transmit["u_viewproj"].write(viewproj)

    def _draw_object(self, prim: Primitive, glass: bool = False) -> None:
        p = self._gl.lit
        params = material_params(prim.material)
        p["u_glass"].value = 1.0 if glass else 0.0
        p["u_shiny"].value = 1.0 if glass or params["specular"] >= float(RENDER["min_specular"]) else 0.0
        p["u_albedo"].value = tuple(float(v) for v in prim.albedo)
        p["u_mat"].value = (params["specular"], params["shininess"], params["reflect"], params["alpha"])
        self._place(p, prim)
        self._gl.vaos["lit", prim.shape, prim.size].render()

    def _draw_transmission(self, prim: Primitive) -> None:
        p = self._gl.transmit
        p["u_albedo"].value = tuple(float(v) for v in prim.albedo)
        p["u_alpha"].value = material_params(prim.material)["alpha"]
        self._place(p, prim)
        self._gl.vaos["transmit", prim.shape, prim.size].render()

    # -- public API ----------------------------------------------------------------------------
    def render(self, state: State, camera: Camera, lamps: list[Lamp] | None = None) -> np.ndarray:
        lights = lamp_lights(check_inputs(state, camera, lamps))
        prims = primitives(state)
        gl, mgl = self._gl, self._gl.mgl
        ctx = gl.ctx
        ctx.enable_only(mgl.DEPTH_TEST)
        light_vp = self._shadow_pass(prims, lights)
        self._set_lights(lights, camera, light_vp)
        gl.shadow_tex.use(location=0)
        gl.irr_tex.use(location=1)
        ctx.enable(mgl.CULL_FACE)
        ctx.front_face = "cw"  # the flipped projection reverses the winding: back faces are culled
        eye = np.asarray(camera.location)
        dist = {id(prim): float(np.linalg.norm(prim.center - eye)) for prim in prims}
        opaque = sorted((q for q in prims if material_params(q.material)["alpha"] >= 1.0), key=lambda q: dist[id(q)])
        glass = sorted((q for q in prims if material_params(q.material)["alpha"] < 1.0), key=lambda q: -dist[id(q)])
        self._msaa.use()
        self._msaa.clear(*gl.clear_color, 1.0, depth=1.0)
        for prim in opaque:
            self._draw_object(prim)
        gl.ground.render()
        if glass:
            ctx.enable(mgl.BLEND)
            self._msaa.depth_mask = False
            for prim in glass:
                ctx.blend_func = mgl.ZERO, mgl.SRC_COLOR
                self._draw_transmission(prim)
                ctx.blend_func = mgl.ONE, mgl.ONE
                self._draw_object(prim, glass=True)
            self._msaa.depth_mask = True
        ctx.copy_framebuffer(self._resolved, self._msaa)
        self._resolved.read_into(self._pixels, components=3, alignment=1)
        w, h = self.size
        return np.frombuffer(self._pixels, dtype=np.uint8).reshape(h, w, 3).copy()

    def render_mask(self, state: State, camera: Camera) -> np.ndarray:
        check_inputs(state, camera)
        prims = primitives(state)
        gl = self._gl
        gl.ctx.enable_only(gl.mgl.DEPTH_TEST | gl.mgl.CULL_FACE)
        gl.ctx.front_face = "cw"
        self._mask_fbo.use()
        self._mask_fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        gl.flat["u_viewproj"].write(self._viewproj(camera))
        for prim in prims:
            gl.flat["u_code"].value = (prim.index + 1) / 255.0
            self._place(gl.flat, prim)
            gl.vaos["flat", prim.shape, prim.size].render()
        self._mask_fbo.read_into(self._codes, components=1, alignment=1)
        w, h = self.size
        return np.frombuffer(self._codes, dtype=np.uint8).reshape(h, w).astype(np.int64) - 1

    def close(self) -> None:
        """Release this renderer's framebuffers (the shared context stays)."""
        fbos, self._fbos = self._fbos, ()
        for fbo in fbos:
            for att in (*fbo.color_attachments, fbo.depth_attachment):
                if att is not None:
                    att.release()
            fbo.release()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


__all__ = ["GLRenderer", "shared_context"]
