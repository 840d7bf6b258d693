"""The ``gl`` renderer: OpenGL 3.3 through moderngl on a headless EGL context (Mesa llvmpipe or a GPU).

One context per process (:func:`shared_context`) holds the programs, the unit meshes and the shadow
map; each :class:`GLRenderer` adds its own framebuffers. A frame is a shadow-map pass from the shadow
lamp, a 4x MSAA colour pass (opaque objects front to back, the ground, then glass back to front) and
a resolve into a preallocated buffer. ``render_mask`` is a flat pass without MSAA that writes
``index + 1`` into an 8-bit attachment.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import math
import threading
import weakref
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from tvr_gym.core.options import DEFAULT_RENDER_SIZE
from tvr_gym.core.scene import State
from tvr_gym.core.spec import SPEC
from tvr_gym.render.base import (
    GROUND,
    RENDER,
    Primitive,
    Renderer,
    check_inputs,
    lamp_lights,
    primitives,
    surface,
)
from tvr_gym.render.geometry import sheet_mesh, unit_mesh
from tvr_gym.render.rig import Camera, Lamp
from tvr_gym.render.studio import (
    EYE,
    FLAT_END,
    FLOOR_ALBEDO,
    LATERAL,
    PROFILE,
    STAGE,
    STUDIO_TEXELS,
    UPHILL,
    floor_bounce,
    irradiance_sh,
    sheet_height,
)

_LIGHT_UNIFORMS = """
uniform vec3 u_lamp_pos[3];
uniform vec3 u_lamp_rad[3];
uniform vec3 u_lamp_aim[3];
uniform float u_lamp_size[3];
uniform int u_shadow_lamp;
uniform int u_own_shadow_lamp;  // the strongest lamp but the shadow lamp
uniform vec3 u_sun_dir;
uniform vec3 u_sun_rad;
uniform float u_sun_size;
"""

_ENCODE = """
uniform float u_grain;         // width of the per-pixel grain (sRGB units; 0 for none)
uniform float u_grain_seed;
vec3 encode(vec3 c) {
    c = clamp(c, 0.0, 1.0);
    vec3 t = sqrt(sqrt(c));   // the sRGB curve as a quartic in c^(1/4): within 0.06 grey levels, and no pow
    vec3 curve = (((0.065528 * t - 0.293483) * t + 1.08282) * t + 0.211954) * t - 0.066799;
    vec3 s = mix(c * 12.92, curve, step(0.0031308, c));
    uvec2 p = uvec2(gl_FragCoord.xy);   // an integer hash of the pixel and the seed (cheaper than sin)
    uint h = p.x * 1973u + p.y * 9277u + uint(u_grain_seed) * 26699u;
    h = (h ^ (h >> 13u)) * 1274126177u;
    h ^= h >> 16u;
    s += (float(h & 65535u) / 65535.0 - 0.5) * u_grain;
    return s;
}
vec3 decode(vec3 s) {   // sRGB -> linear, a cubic within 0.2 % of the exact curve
    return s * (s * (s * 0.305306011 + 0.682171111) + 0.012522878);
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
    float lit = texture(u_shadow_map, vec3(s.xy + vec2(-0.7 * r, -0.3 * r), s.z))
              + texture(u_shadow_map, vec3(s.xy + vec2(0.7 * r, 0.3 * r), s.z));
    return 1.0 - u_shadow_strength * (1.0 - 0.5 * lit);
}
float shadow_sharp(vec4 light_pos) {   // one filtered tap: for blurred reflections of the floor
    vec3 s = light_pos.xyz / light_pos.w * 0.5 + 0.5;
    if (u_shadow_on < 0.5 || s.x <= 0.0 || s.x >= 1.0 || s.y <= 0.0 || s.y >= 1.0 || s.z >= 1.0) return 1.0;
    return 1.0 - u_shadow_strength * (1.0 - texture(u_shadow_map, s));
}
"""

_SHEET = """
uniform vec2 u_uphill;
uniform vec2 u_lateral;
uniform vec2 u_lateral_extent;
uniform vec2 u_profile_range;
bool on_sheet(vec3 p) {
    float s = dot(p.xy, u_uphill);
    float l = dot(p.xy, u_lateral);
    return s >= u_profile_range.x && s <= u_profile_range.y && l >= u_lateral_extent.x && l <= u_lateral_extent.y;
}
"""

_HEIGHT = """
float height(float s) {        // the sheet's height at uphill distance s (u_profile: even samples)
    float n = float(textureSize(u_profile, 0).x);
    float x = (s - u_profile_range.x) / (u_profile_range.y - u_profile_range.x);
    return texture(u_profile, vec2(clamp(x, 0.0, 1.0) * (n - 1.0) / n + 0.5 / n, 0.5)).r;
}
float slope(float s) { return (height(s + 0.05) - height(s - 0.05)) / 0.1; }
"""

_QUAD_VERTEX = """
#version 330
in vec2 in_pos;
out vec2 v_uv;
void main() {
    v_uv = in_pos * 0.5 + 0.5;
    gl_Position = vec4(in_pos, 0.0, 1.0);
}
"""

_STUDIO_FRAGMENT = (
    """
#version 330
// The studio seen from u_eye in every direction (equirectangular: x azimuth, y elevation from -90 deg):
// the lit sheet (flat floor curving up into the backdrop wall) where a ray meets it, else black.
uniform sampler2D u_profile;   // the sheet's height, sampled evenly over u_profile_range
uniform vec3 u_eye;
uniform float u_flat_end;      // the floor is flat up to this uphill distance
uniform vec3 u_floor_albedo;
in vec2 v_uv;
out vec4 f_color;
"""
    + _LIGHT_UNIFORMS
    + _SHEET
    + _HEIGHT
    + """
const float PI = 3.14159265;
// Distance to the sheet along d from u_eye (negative: no hit); as tvr_gym.render.studio.trace_sheet.
float trace(vec3 d) {
    float s0 = dot(u_eye.xy, u_uphill);
    float ds = dot(d.xy, u_uphill);
    if (d.z < 0.0) {
        float t = -u_eye.z / d.z;
        if (s0 + t * ds <= u_flat_end) return t;
    }
    if (ds <= 0.0) return -1.0;
    float t_in = max((u_flat_end - s0) / ds, 0.0);
    float t_out = (u_profile_range.y - s0) / ds;
    float prev_t = t_in;
    float prev = u_eye.z + t_in * d.z - height(s0 + t_in * ds);
    if (prev <= 0.0) return t_in;
    for (int k = 1; k < MARCH; ++k) {
        float t = mix(t_in, t_out, float(k) / float(MARCH - 1));
        float above = u_eye.z + t * d.z - height(s0 + t * ds);
        if (above <= 0.0) return mix(prev_t, t, clamp(prev / max(prev - above, 1e-12), 0.0, 1.0));
        prev = above;
        prev_t = t;
    }
    return -1.0;
}
void main() {
    float az = v_uv.x * 2.0 * PI - PI;
    float el = v_uv.y * PI - 0.5 * PI;
    vec3 d = vec3(cos(el) * cos(az), cos(el) * sin(az), sin(el));
    float t = trace(d);
    vec3 color = vec3(0.0);
    vec3 q = u_eye + t * d;
    if (t >= 0.0 && on_sheet(q)) {
        float s = dot(q.xy, u_uphill);
        vec3 n = normalize(vec3(-slope(s) * u_uphill, 1.0));
        vec3 e = u_sun_rad * max(dot(n, u_sun_dir), 0.0);
        for (int i = 0; i < 3; ++i) {
            vec3 to_lamp = u_lamp_pos[i] - q;
            float inv = inversesqrt(dot(to_lamp, to_lamp));
            vec3 l = to_lamp * inv;
            e += u_lamp_rad[i] * (clamp(-dot(l, u_lamp_aim[i]), 0.0, 1.0) * max(dot(n, l), 0.0) * inv * inv);
        }
        color = u_floor_albedo * e;
    }
    f_color = vec4(color, 1.0);
}
"""
)

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
// The lamps' light on the sheet (its height and slope at each x, y), without shadows, plus the light
// the sheet bounces onto itself (u_bounce, by uphill distance).
uniform sampler2D u_profile;
uniform sampler2D u_bounce;
in vec3 v_world;
out vec4 f_irradiance;         // rgb: light from all but the shadow lamp; a: the shadow lamp's share
"""
    + _LIGHT_UNIFORMS
    + _SHEET
    + _HEIGHT
    + """
void main() {
    float s = dot(v_world.xy, u_uphill);
    vec3 q = vec3(v_world.xy, height(s));
    vec3 n = normalize(vec3(-slope(s) * u_uphill, 1.0));
    float nb = float(textureSize(u_bounce, 0).x);
    float x = clamp((s - u_profile_range.x) / (u_profile_range.y - u_profile_range.x), 0.0, 1.0);
    vec3 rest = u_sun_rad * max(dot(n, u_sun_dir), 0.0);
    rest += texture(u_bounce, vec2(x * (nb - 1.0) / nb + 0.5 / nb, 0.5)).r;
    float key = 0.0;
    for (int i = 0; i < 3; ++i) {
        vec3 to_lamp = u_lamp_pos[i] - q;
        float inv = inversesqrt(dot(to_lamp, to_lamp));
        vec3 l = to_lamp * inv;
        float g = clamp(-dot(l, u_lamp_aim[i]), 0.0, 1.0) * max(dot(n, l), 0.0) * inv * inv;
        if (i == u_shadow_lamp) key = g; else rest += u_lamp_rad[i] * g;
    }
    f_irradiance = vec4(rest, key);
}
"""
)

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
    vec2 d = abs(a - u_square);    // box-filtered coverage of a line 2 * u_line_half wide
    vec2 cov = min(max(min(d + 0.5 * w, vec2(u_line_half)) - max(d - 0.5 * w, vec2(-u_line_half)), 0.0) / w, 1.0);
    float reach = u_square + u_line_half;
    float line = max(cov.x * step(a.y, reach), cov.y * step(a.x, reach));
    vec3 albedo = mix(u_ground, u_line, line);
    vec4 irr = textureLod(u_irradiance, v_world.xy / (2.0 * u_irr_extent) + 0.5, 0.0);
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
out vec3 v_local;
out vec4 v_light;
void main() {
    vec3 p = in_pos * u_scale;
    v_local = p;
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
#define KIND _KIND_
#define SHAPE _SHAPE_
#define BEVEL _BEVEL_          // the official mesh's edge rounding (spec bevel), a fraction of u_scale
#define CONTACT _CONTACT_      // how much light the floor under an object still gets (render.contact)
#define OCCLUSION _OCCLUSION_  // the share of the studio's light a face turned down misses (render.occlusion)
// One object, shaded after the official Cycles materials (docs/rendering.md):
//   rubber (u_kind 0): diffuse body lit by the lamps and the studio, under a Fresnel-weighted glossy coat;
//   metal (1): two glossy GGX lobes tinted by the colour, reflecting the lamps and the studio;
//   glass (2): Fresnel reflection plus refraction through the object (exact exit point of the
//              primitive) onto what the opaque pass drew behind it, tinted by the colour at each surface.
// KIND and SHAPE (0 cube, 1 sphere, 2 cylinder; glass only) are fixed per program: llvmpipe runs
// every branch of an if on a uniform, so each material gets a program of its own.
uniform int u_kind;
uniform vec4 u_lobes;          // (weight, alpha) of up to two glossy lobes
uniform float u_ior;
uniform vec3 u_albedo;
uniform vec3 u_eye;
uniform vec3 u_sh[9];          // the studio's irradiance as spherical harmonics
uniform sampler2D u_studio;    // the studio in every direction (equirectangular, mipmapped)
uniform float u_studio_width;
uniform sampler2D u_irradiance;
uniform float u_irr_extent;
uniform vec3 u_key_rad;
uniform vec3 u_floor_albedo;
uniform sampler2DMS u_behind;  // glass: the image drawn so far (multisampled; its first sample is read)
uniform mat4 u_viewproj;
uniform mat4 u_light_vp;
uniform vec3 u_center;
uniform float u_scale;
uniform vec2 u_rot;
in vec3 v_world;
in vec3 v_normal;
in vec3 v_local;
in vec4 v_light;
out vec4 f_color;
"""
    + _LIGHT_UNIFORMS
    + _SHADOW_LOOKUP
    + _ENCODE
    + _SHEET
    + """
const float PI = 3.14159265;

vec3 sh_irradiance(vec3 n) {
    vec3 e = u_sh[0] * 0.282095 + (u_sh[1] * n.y + u_sh[2] * n.z + u_sh[3] * n.x) * 0.488603
           + (u_sh[4] * n.x * n.y + u_sh[5] * n.y * n.z + u_sh[7] * n.x * n.z) * 1.092548
           + u_sh[6] * (0.315392 * (3.0 * n.z * n.z - 1.0)) + u_sh[8] * (0.546274 * (n.x * n.x - n.y * n.y));
    return max(e, vec3(0.0));
}

vec3 studio_texture(vec3 d, float lod) {
    vec2 uv = vec2(atan(d.y, d.x) / (2.0 * PI) + 0.5, asin(clamp(d.z, -1.0, 1.0)) / PI + 0.5);
    return textureLod(u_studio, uv, lod).rgb;
}

vec3 to_object(vec3 w) { return vec3(u_rot.x * w.x + u_rot.y * w.y, -u_rot.y * w.x + u_rot.x * w.y, w.z); }
vec3 to_world(vec3 o) { return vec3(u_rot.x * o.x - u_rot.y * o.y, u_rot.y * o.x + u_rot.x * o.y, o.z); }

// Whether the ray from world point q along unit direction l meets this object (its sharp shape).
bool blocks(vec3 q, vec3 l) {
    vec3 o = to_object(q - u_center);
    vec3 d = to_object(l);
    float h = u_scale;
#if SHAPE == 1
    float b = dot(o, d);
    float disc = b * b - dot(o, o) + h * h;
    return disc > 0.0 && -b + sqrt(disc) > 0.0;
#else
    vec3 inv = 1.0 / (d + vec3(equal(d, vec3(0.0))) * 1e-9);
    vec3 t1 = (-h - o) * inv;
    vec3 t2 = (h - o) * inv;
    vec3 lo = min(t1, t2);
    vec3 hi = max(t1, t2);
#if SHAPE == 0
    float enter = max(lo.x, max(lo.y, lo.z));
    float leave = min(hi.x, min(hi.y, hi.z));
#else
    float a = dot(d.xy, d.xy);
    float b = dot(o.xy, d.xy);
    float disc = b * b - a * (dot(o.xy, o.xy) - h * h);
    if (disc <= 0.0 || a < 1e-12) return false;
    float root = sqrt(disc);
    float enter = max((-b - root) / a, lo.z);
    float leave = min((-b + root) / a, hi.z);
#endif
    return enter < leave && leave > 0.0;
#endif
}

// The light this object hides from floor point q, of the sun and of the strongest lamp besides the
// shadow lamp (whose shadows the shadow map draws; the third lamp is the weakest): the object's own
// shadows, as the floor seen through glass shows them.
vec3 own_shadow(vec3 q) {
    vec3 hidden = blocks(q, u_sun_dir) ? u_sun_rad * max(u_sun_dir.z, 0.0) : vec3(0.0);
    int i = u_own_shadow_lamp;
    vec3 to_lamp = u_lamp_pos[i] - q;
    float inv = inversesqrt(dot(to_lamp, to_lamp));
    vec3 l = to_lamp * inv;
    if (blocks(q, l))
        hidden += u_lamp_rad[i] * (clamp(-dot(l, u_lamp_aim[i]), 0.0, 1.0) * max(l.z, 0.0) * inv * inv);
    return u_floor_albedo * hidden;
}

// 1 on open floor, falling to CONTACT on the floor under the object itself (which no lamp reaches).
float open_floor(vec3 q) {
    vec2 o = abs(to_object(q - u_center).xy) / u_scale;
    float inside = SHAPE == 0 ? max(o.x, o.y) : length(o);
    return mix(CONTACT, 1.0, smoothstep(0.85, 1.15, inside));
}

vec3 floor_light(vec3 q, float lod) {   // the floor as the camera sees it, with the shadow lamp's shadows
    if (!on_sheet(q)) return vec3(0.0);
    vec4 irr = textureLod(u_irradiance, q.xy / (2.0 * u_irr_extent) + 0.5, 0.0);
    return u_floor_albedo * (irr.rgb + u_key_rad * (irr.a * shadow_factor(u_light_vp * vec4(q, 1.0)))) * open_floor(q);
}

// What a ray from p along d sees of the studio, through the material's lobes: the weighted sum of
// the view blurred over each lobe's width (lobes: (weight, alpha) x 2).
vec3 studio(vec3 p, vec3 d, vec4 lobes) {
    vec2 spread = max(2.0 * lobes.yw, vec2(0.01));
    if (d.z < -0.05) {
        float t = -p.z / d.z;
        if (t < u_irr_extent) {
            vec3 q = p + t * d;
            if (!on_sheet(q)) return vec3(0.0);
            vec4 irr = textureLod(u_irradiance, q.xy / (2.0 * u_irr_extent) + 0.5, 0.0);  // smooth: no blur
            vec3 lit = irr.rgb + u_key_rad * (irr.a * shadow_sharp(u_light_vp * vec4(q, 1.0)));
            return (lobes.x + lobes.z) * u_floor_albedo * lit * open_floor(q);
        }
    }
    vec2 uv = vec2(atan(d.y, d.x) / (2.0 * PI) + 0.5, asin(clamp(d.z, -1.0, 1.0)) / PI + 0.5);
    vec2 lod = log2(max(spread * u_studio_width / (2.0 * PI), vec2(1.0)));
    return (lobes.x * textureLod(u_studio, uv, lod.x) + lobes.z * textureLod(u_studio, uv, lod.y)).rgb;
}

// Radiance reflected by a GGX lobe of width alpha from a source of irradiance e (on a surface facing it).
float ggx(vec3 n, vec3 v, vec3 l, float alpha) {
    float nl = dot(n, l);
    if (nl <= 0.0) return 0.0;
    vec3 h = normalize(l + v);
    float nh = max(dot(n, h), 0.0);
    float nv = max(dot(n, v), 1e-3);
    float a2 = alpha * alpha;
    float q = nh * nh * (a2 - 1.0) + 1.0;
    float k = 0.5 * alpha;
    float g = nl / (nl * (1.0 - k) + k) * nv / (nv * (1.0 - k) + k);
    return a2 / (q * q) * g / (4.0 * nv);
}

float widened(float alpha, float spread) { return min(sqrt(alpha * alpha + spread * spread), 1.0); }

// The material's glossy lobes reflecting a source of angular size spread. (Rubber's coat reflects
// the studio, but its lamp highlights, a Fresnel factor of a few percent of a broad lobe, are left out.)
float lobes(vec3 n, vec3 v, vec3 l, float spread) {
#if KIND == 0
    return 0.0;
#else
    float g = u_lobes.x * ggx(n, v, l, widened(u_lobes.y, spread));
#if KIND == 1
    g += u_lobes.z * ggx(n, v, l, widened(u_lobes.w, spread));
#endif
    return g;
#endif
}

// Direct light at p: the diffuse irradiance (returned) and the glossy lobes' reflection of the lamps.
vec3 lamps(vec3 p, vec3 n, vec3 v, float shadow, out vec3 glossy) {
    vec3 diffuse = u_sun_rad * max(dot(n, u_sun_dir), 0.0);
    glossy = u_sun_rad * lobes(n, v, u_sun_dir, u_sun_size);
    for (int i = 0; i < 3; ++i) {
        vec3 to_lamp = u_lamp_pos[i] - p;
        float inv = inversesqrt(dot(to_lamp, to_lamp));
        vec3 l = to_lamp * inv;
        vec3 e = u_lamp_rad[i] * (clamp(-dot(l, u_lamp_aim[i]), 0.0, 1.0) * inv * inv);
        if (i == u_shadow_lamp) e *= shadow;
        diffuse += e * max(dot(n, l), 0.0);
        float spread = 0.25 * u_lamp_size[i] * inv;
        glossy += e * lobes(n, v, l, spread);
    }
    return diffuse;
}

float fresnel(float cosi, float eta) {
    float c = abs(cosi);
    float g2 = eta * eta - 1.0 + c * c;
    if (g2 < 0.0) return 1.0;
    float g = sqrt(g2);
    float a = (g - c) / (g + c);
    float b = (c * (g + c) - 1.0) / (c * (g - c) + 1.0);
    return 0.5 * a * a * (1.0 + b * b);
}

// The shading normal: the mesh's, turned toward the official mesh's rounded edges near them
// (the normal of a box or cylinder whose edges are rounded with radius BEVEL * u_scale).
vec3 shading_normal() {
#if SHAPE == 0
    float inner = u_scale * (1.0 - BEVEL);
    vec3 d = v_local - clamp(v_local, -inner, inner);
    return dot(d, d) > 1e-12 ? to_world(normalize(d)) : normalize(v_normal);
#elif SHAPE == 2
    float inner = u_scale * (1.0 - BEVEL);
    float r = length(v_local.xy);
    vec2 d = vec2(max(r - inner, 0.0), max(abs(v_local.z) - inner, 0.0));
    if (d.x > 0.0 && d.y > 0.0)
        return to_world(normalize(vec3(v_local.xy / r * d.x, sign(v_local.z) * d.y)));
    return normalize(v_normal);
#else
    return normalize(v_normal);
#endif
}

#if KIND == 2
// Glass: where a ray inside the primitive (object frame) leaves it; returns t and the outward normal.
float exit_point(vec3 o, vec3 d, out vec3 n) {
#if SHAPE == 1
    float t = -2.0 * dot(o, d);
    n = normalize(o + t * d);
    return t;
#else
    vec3 inv = 1.0 / (d + vec3(equal(d, vec3(0.0))) * 1e-9);
#if SHAPE == 0
    vec3 far = (sign(d) * u_scale - o) * inv;
    float t = min(far.x, min(far.y, far.z));
    n = t == far.x ? vec3(sign(d.x), 0.0, 0.0) : (t == far.y ? vec3(0.0, sign(d.y), 0.0) : vec3(0.0, 0.0, sign(d.z)));
    return t;
#else
    float a = dot(d.xy, d.xy);
    float b = dot(o.xy, d.xy);
    float c = dot(o.xy, o.xy) - u_scale * u_scale;
    float side = a > 1e-12 ? (-b + sqrt(max(b * b - a * c, 0.0))) / a : 1e9;
    float cap = (sign(d.z) * u_scale - o.z) * inv.z;
    if (side < cap) {
        n = vec3(normalize(o.xy + side * d.xy), 0.0);
        return side;
    }
    n = vec3(0.0, 0.0, sign(d.z));
    return cap;
#endif
#endif
}

// GGX's distribution used as the image of a round source of angular radius alpha, centred on l.
float source(vec3 d, vec3 l, float alpha) {
    float c = dot(d, l);
    if (c <= 0.0) return 0.0;
    float a2 = alpha * alpha;
    float q = c * c * (a2 - 1.0) + 1.0;
    return a2 / (PI * q * q);
}

// The lamps and the sun seen along a ray from q in direction d (what a refracted ray meets).
vec3 lamps_seen(vec3 q, vec3 d) {
    vec3 seen = u_sun_rad * source(d, u_sun_dir, 2.0 * u_sun_size);
    for (int i = 0; i < 3; ++i) {
        vec3 to_lamp = u_lamp_pos[i] - q;
        float inv = inversesqrt(dot(to_lamp, to_lamp));
        vec3 l = to_lamp * inv;
        vec3 e = u_lamp_rad[i] * (clamp(-dot(l, u_lamp_aim[i]), 0.0, 1.0) * inv * inv);
        seen += e * source(d, l, 0.5 * u_lamp_size[i] * inv);
    }
    return seen;
}

// What the already drawn image shows along a ray leaving the glass at q in direction d.
vec3 behind(vec3 q, vec3 d) {
    if (d.z < -0.02) {
        vec3 g = q - d * (q.z / d.z);
        vec4 clip = u_viewproj * vec4(g, 1.0);
        vec2 uv = clip.xy / clip.w * 0.5 + 0.5;
        if (clip.w > 0.0 && all(greaterThan(uv, vec2(0.0))) && all(lessThan(uv, vec2(1.0)))) {
            vec3 seen = decode(texelFetch(u_behind, ivec2(uv * vec2(textureSize(u_behind))), 0).rgb);
            return max(seen * open_floor(g) - own_shadow(g), 0.0);
        }
        return floor_light(g, 0.0);
    }
    return studio_texture(d, 0.0) + lamps_seen(q, d);
}

// Light that enters the glass at p (normal n), crosses it and leaves, tinted once more on the way out.
vec3 transmitted(vec3 p, vec3 n, vec3 v) {
    vec3 d = refract(-v, n, 1.0 / u_ior);
    vec3 o = to_object(p - u_center);
    vec3 od = to_object(d);
    for (int bounce = 0; bounce < 2; ++bounce) {
        vec3 m;
        float t = exit_point(o, od, m);
        o += t * od;
        vec3 out_dir = refract(od, -m, u_ior);
        if (dot(out_dir, out_dir) > 0.0) {
            float f = fresnel(dot(od, m), 1.0 / u_ior);
            return (1.0 - f) * u_albedo * behind(to_world(o) + u_center, to_world(out_dir));
        }
        od = reflect(od, -m);   // total internal reflection: once more inside
    }
    return vec3(0.0);
}

#endif

void main() {
    vec3 n = shading_normal();
    vec3 v = normalize(u_eye - v_world);
    vec3 r = reflect(-v, n);
    vec3 glossy;
    vec3 diffuse = lamps(v_world, n, v, shadow_factor(v_light), glossy);
#if KIND == 1
    vec3 color = u_albedo * (glossy + studio(v_world, r, u_lobes));
#elif KIND == 2
    float f = fresnel(dot(n, v), u_ior);
    vec3 color = u_albedo * (f * (glossy + studio(v_world, r, u_lobes)) + (1.0 - f) * transmitted(v_world, n, v));
#else
    float f = fresnel(dot(n, v), u_ior);
    vec3 body = u_albedo * (diffuse + sh_irradiance(n) * (1.0 - OCCLUSION * (0.5 - 0.5 * n.z)));
    vec3 color = mix(body, glossy + sh_irradiance(r), f);   // a rough coat sees the studio's blurred light
#endif
    f_color = vec4(encode(color), 1.0);
}
"""
)

def _placed_vertex(view_projection: str) -> str:
    """A vertex shader that scales, turns and moves a primitive, then projects it by ``view_projection``
    (the shadow pass's light matrix, or the mask pass's camera matrix)."""
    return f"""
#version 330
uniform mat4 {view_projection};
uniform vec3 u_center;
uniform float u_scale;
uniform vec2 u_rot;
in vec3 in_pos;
void main() {{
    vec3 p = in_pos * u_scale;
    vec3 world = vec3(u_rot.x * p.x - u_rot.y * p.y, u_rot.y * p.x + u_rot.x * p.y, p.z) + u_center;
    gl_Position = {view_projection} * vec4(world, 1.0);
}}
"""


_SHADOW_VERTEX = _placed_vertex("u_light_vp")
_MASK_VERTEX = _placed_vertex("u_viewproj")

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


_KINDS = {"diffuse": 0, "conductor": 1, "dielectric": 2}
_BEVEL = {shape: float(v) for shape, v in SPEC.raw["bevel"].items() if shape in SPEC.values["shape"]}
_SHAPES = {"cube": 0, "sphere": 1, "cylinder": 2}


_BOX_CORNERS = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)


GRAIN_WIDTH = float(RENDER["grain"]) / 255.0 * math.sqrt(12.0)
"""The width of uniform noise whose standard deviation is the spec's ``render.grain`` grey levels."""


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _program_keys() -> list[tuple[str, str]]:
    """One object program per material kind and shape (the shading normal and glass's path depend on both)."""
    return [(kind, shape) for kind in _KINDS for shape in _SHAPES]


def _grain_seed(camera: Camera) -> float:
    """The grain pattern's seed: fixed by the camera, so one episode's jitter gives one pattern."""
    return float(zlib.crc32(np.asarray(camera.location, dtype=np.float64).tobytes()) % 1000)


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
        self.objects = {key: self._object_program(*key) for key in _program_keys()}
        self._uniforms: dict[str, list] = {}
        self.shared: dict[str, object] = {}
        self.version = 0
        self.applied: dict[tuple[str, str], int] = {}
        self.ground_prog = ctx.program(vertex_shader=_GROUND_VERTEX, fragment_shader=_GROUND_FRAGMENT)
        self.irr_prog = ctx.program(vertex_shader=_IRRADIANCE_VERTEX, fragment_shader=_IRRADIANCE_FRAGMENT)
        self.studio_prog = ctx.program(
            vertex_shader=_QUAD_VERTEX,
            fragment_shader=_STUDIO_FRAGMENT.replace("MARCH", str(int(RENDER["studio"]["march_steps"]))),
        )
        self.studio_prog["u_flat_end"].value = FLAT_END
        quad = ctx.buffer(np.array([-1, -1, 1, -1, 1, 1, -1, -1, 1, 1, -1, 1], dtype=np.float32).tobytes())
        self._buffers.append(quad)
        self.irr_quad = ctx.vertex_array(self.irr_prog, [(quad, "2f", "in_pos")])
        self.studio_quad = ctx.vertex_array(self.studio_prog, [(quad, "2f", "in_pos")])
        self.irr_texels = int(RENDER["irradiance_texels"])
        self.irr_tex = self._target((self.irr_texels, self.irr_texels), mipmaps=False)
        self.irr_fbo = ctx.framebuffer(color_attachments=[self.irr_tex])
        self.studio_tex = self._target(STUDIO_TEXELS)
        self.studio_tex.repeat_x = True
        self.studio_levels = 1 + int(math.log2(min(STUDIO_TEXELS)))
        self.studio_fbo = ctx.framebuffer(color_attachments=[self.studio_tex])
        s = np.linspace(PROFILE[0, 0], PROFILE[-1, 0], int(RENDER["studio"]["profile_texels"]))
        self.profile_tex = ctx.texture((len(s), 1), 1, sheet_height(s).astype(np.float32).tobytes(), dtype="f4")
        bounce = floor_bounce()[1].astype(np.float32)
        self.bounce_tex = ctx.texture((len(bounce), 1), 1, bounce.tobytes(), dtype="f4")
        for tex in (self.profile_tex, self.bounce_tex):
            tex.filter = (moderngl.LINEAR, moderngl.LINEAR)
            tex.repeat_x = tex.repeat_y = False
        self.depth = ctx.program(vertex_shader=_SHADOW_VERTEX, fragment_shader=_EMPTY_FRAGMENT)
        self.flat = ctx.program(vertex_shader=_MASK_VERTEX, fragment_shader=_MASK_FRAGMENT)
        self.vaos: dict[tuple[str, str, str], object] = {}
        for shape in SPEC.values["shape"]:
            for size in SPEC.values["size"]:
                vertices, tris = unit_mesh(shape, size)
                vbo, ibo = ctx.buffer(vertices.tobytes()), ctx.buffer(tris.tobytes())
                self._buffers += [vbo, ibo]
                programs = [(("depth", shape, size), self.depth), (("flat", shape, size), self.flat)]
                programs += [((key, shape, size), prog) for key, prog in self.objects.items() if key[1] == shape]
                for name, prog in programs:
                    attrs = ["in_pos", "in_normal"] if "in_normal" in prog else ["in_pos"]
                    layout = [(vbo, "3f 3f" if len(attrs) == 2 else "3f 12x", *attrs)]
                    self.vaos[name] = ctx.vertex_array(prog, layout, ibo, index_element_size=4)
        xyz, tris = sheet_mesh()
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
        self.lamps_key: tuple | None = None
        self.sh = np.zeros((9, 3), dtype=np.float32)
        self.lock = threading.RLock()
        """Held by every frame: GL state is shared, so renders from several threads take turns."""
        self._static_uniforms()
        self.any_thread = _release_current()
        """Whether every use makes the context current in its own thread (:meth:`current`): then any thread may
        render (a trainer's data thread, a web server's request threads), not only the one that created it."""

    @contextmanager
    def current(self) -> Iterator[None]:
        """Hold :attr:`lock` with the context current in this thread, and release it from this thread after."""
        with self.lock:
            if not self.any_thread:
                yield
                return
            with self.ctx:
                yield

    def _object_program(self, kind: str, shape: str):
        source = _FRAGMENT.replace("_KIND_", str(_KINDS[kind])).replace("_SHAPE_", str(_SHAPES.get(shape, -1)))
        source = source.replace("_BEVEL_", repr(_BEVEL.get(shape, 0.0)))
        source = source.replace("_CONTACT_", repr(float(RENDER["contact"])))
        source = source.replace("_OCCLUSION_", repr(float(RENDER["occlusion"])))
        return self.ctx.program(vertex_shader=_VERTEX, fragment_shader=source)

    def share(self, name: str, value) -> None:
        """Give every object program a uniform's new value (lamps, studio, frame); a program takes the
        values it lacks when it is next used (:meth:`program`), so unused programs cost nothing."""
        self.shared[name] = value
        self.version += 1

    def program(self, key: tuple[str, str]):
        """The object program of ``key`` with the current shared uniforms."""
        prog = self.objects[key]
        if self.applied.get(key) != self.version:
            for name, value in self.shared.items():
                uniform = prog.get(name, None)
                if uniform is not None:
                    uniform.write(value) if isinstance(value, bytes) else setattr(uniform, "value", value)
            self.applied[key] = self.version
        return prog

    def set_objects(self, name: str, value) -> None:
        """Set a uniform in every object program that has it, now (values that never change)."""
        uniforms = self._uniforms.get(name)
        if uniforms is None:
            uniforms = self._uniforms[name] = [p[name] for p in self.objects.values() if name in p]
        for uniform in uniforms:
            if isinstance(value, bytes):
                uniform.write(value)
            else:
                uniform.value = value

    def _target(self, size: tuple[int, int], mipmaps: bool = True):
        """A float texture to render lighting into; with ``mipmaps``, glossy lobes can blur it."""
        tex = self.ctx.texture(size, 4, dtype="f4")
        tex.filter = (self.mgl.LINEAR_MIPMAP_LINEAR if mipmaps else self.mgl.LINEAR, self.mgl.LINEAR)
        if mipmaps:
            tex.build_mipmaps()  # allocate the levels; light_studio fills them
        tex.repeat_x = tex.repeat_y = False
        return tex

    def _static_uniforms(self) -> None:
        shared = {
            "u_shadow_map": 0,
            "u_irradiance": 1,
            "u_shadow_strength": float(RENDER["shadow_strength"]),
            "u_shadow_radius": float(RENDER["shadow_softness"]) / self.shadow_size,
            "u_irr_extent": float(RENDER["irradiance_extent"]),
        }
        for name, value in shared.items():
            if name in self.ground_prog:
                self.ground_prog[name].value = value
            self.set_objects(name, value)
        self.irr_prog["u_irr_extent"].value = float(RENDER["irradiance_extent"])
        g = self.ground_prog
        g["u_ground"].value = tuple(float(v) for v in FLOOR_ALBEDO)
        g["u_line"].value = (float(STAGE["line_albedo"]),) * 3
        g["u_square"].value = SPEC.visible_limit * SPEC.cell
        g["u_line_half"].value = float(GROUND["line_width"]) / 2.0
        sheet = {
            "u_uphill": tuple(float(v) for v in UPHILL),
            "u_lateral": tuple(float(v) for v in LATERAL),
            "u_lateral_extent": tuple(float(v) for v in STAGE["lateral_extent"]),
            "u_profile_range": (float(PROFILE[0, 0]), float(PROFILE[-1, 0])),
            "u_floor_albedo": tuple(float(v) for v in FLOOR_ALBEDO),
        }
        for name, value in sheet.items():
            for p in (self.studio_prog, self.irr_prog):
                if name in p:
                    p[name].value = value
            self.set_objects(name, value)
        self.irr_prog["u_profile"].value = 4
        self.irr_prog["u_bounce"].value = 5
        self.studio_prog["u_eye"].value = tuple(float(v) for v in EYE)
        self.studio_prog["u_profile"].value = 4
        for name, value in (("u_studio", 2), ("u_behind", 3), ("u_studio_width", float(STUDIO_TEXELS[0]))):
            self.set_objects(name, value)
        self.clear_color = (0.0, 0.0, 0.0)

    def light_studio(self, uniforms: dict, key_rad: tuple) -> None:
        """When the lamps changed: set their uniforms everywhere, relight the ground's irradiance
        texture and the studio texture, and refit the studio's irradiance."""
        key = tuple(uniforms.values())
        if self.lamps_key == key:
            return
        self.lamps_key = key
        for name, value in uniforms.items():
            self.share(name, value)
            for p in (self.irr_prog, self.studio_prog):
                uniform = p.get(name, None)  # a shader that ignores a lamp property has no such uniform
                if uniform is not None:
                    uniform.write(value) if isinstance(value, bytes) else setattr(uniform, "value", value)
        self.ground_prog["u_key_rad"].value = key_rad
        self.share("u_key_rad", key_rad)
        self.ctx.disable(self.mgl.DEPTH_TEST | self.mgl.BLEND | self.mgl.CULL_FACE)
        self.profile_tex.use(location=4)
        self.bounce_tex.use(location=5)
        self.irr_fbo.use()
        self.irr_quad.render()
        self.profile_tex.use(location=4)
        self.studio_fbo.use()
        self.studio_quad.render()
        w, h = STUDIO_TEXELS
        level = np.frombuffer(self.studio_tex.read(), dtype=np.float32).reshape(h, w, 4)
        self.sh = irradiance_sh(level[..., :3])
        for k in range(1, self.studio_levels):  # the blurred levels: 2x2 means, cheaper here than in llvmpipe
            level = 0.25 * (level[0::2, 0::2] + level[1::2, 0::2] + level[0::2, 1::2] + level[1::2, 1::2])
            self.studio_tex.write(np.ascontiguousarray(level, dtype=np.float32).tobytes(), level=k)
        self.share("u_sh", self.sh.tobytes())


def _release_current() -> bool:
    """Make no EGL context current in this thread (the one that created the shared context).

    An EGL context is current in at most one thread: left current in its creator, no other thread can use it.
    Released here, each use enters it (``with ctx``: ``eglMakeCurrent`` in the using thread) and leaves it
    released. Returns ``False`` where libEGL cannot be reached this way (the creating thread then keeps it).
    """
    try:
        egl = ctypes.CDLL(ctypes.util.find_library("EGL") or "libEGL.so.1")
        egl.eglGetCurrentDisplay.restype = ctypes.c_void_p
        egl.eglMakeCurrent.argtypes = [ctypes.c_void_p] * 4
        egl.eglMakeCurrent.restype = ctypes.c_uint
        display = egl.eglGetCurrentDisplay()
        return bool(display) and egl.eglMakeCurrent(display, None, None, None) == 1
    except (OSError, AttributeError):
        return False


_SHARED: _Shared | None = None
_SHARED_ERROR: Exception | None = None
_LIVE: weakref.WeakSet = weakref.WeakSet()
"""The gl renderers of this process (the context stays while one of them is open)."""
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


def release_shared_context() -> bool:
    """Free the process's GL context and everything in it, unless an open renderer still uses it.
    Returns whether it was freed; the next gl renderer creates a new context."""
    global _SHARED
    with _LOCK:
        if _SHARED is None or any(not r.closed for r in list(_LIVE)):
            return False
        _SHARED.ctx.release()
        _SHARED = None
        return True


def _shadow_camera(position: np.ndarray) -> Camera:
    """A camera at the shadow lamp aimed at the origin with ``render.shadow_fov_deg`` (the same camera model)."""
    half = math.radians(float(RENDER["shadow_fov_deg"])) / 2.0
    return Camera(location=tuple(float(v) for v in position), focal_length_mm=0.5 / math.tan(half), sensor_width_mm=1.0)


class GLRenderer(Renderer):
    """OpenGL renderer with MSAA, soft shadow maps, shiny metal and blended glass."""

    name = "gl"

    def __init__(self, size: tuple[int, int] = DEFAULT_RENDER_SIZE, grain: bool = True) -> None:
        super().__init__(size)
        self.grain = bool(grain)
        self._grain = GRAIN_WIDTH if self.grain else 0.0
        self._gl = shared_context()
        self.closed = False
        _LIVE.add(self)
        with self._gl.current():
            self._make_framebuffers()
        self._last_view: tuple[Camera | None, bytes] = (None, b"")
        w, h = self.size
        self._pixels = bytearray(w * h * 3)
        self._codes = bytearray(w * h)

    def _make_framebuffers(self) -> None:
        ctx = self._gl.ctx
        samples = min(int(RENDER["msaa_samples"]), int(ctx.max_samples))
        self._msaa = ctx.framebuffer(
            color_attachments=[ctx.texture(self.size, 4, samples=samples)],
            depth_attachment=ctx.depth_renderbuffer(self.size, samples=samples),
        )
        # what glass refracts: a copy of the multisampled image drawn so far (a copy costs a sixth of a resolve)
        self._behind_tex = ctx.texture(self.size, 4, samples=samples)
        self._behind = ctx.framebuffer(color_attachments=[self._behind_tex])
        self._resolved = ctx.framebuffer(color_attachments=[ctx.renderbuffer(self.size, components=4)])
        self._mask_fbo = ctx.framebuffer(
            color_attachments=[ctx.renderbuffer(self.size, components=1)],
            depth_attachment=ctx.depth_renderbuffer(self.size),
        )
        self._fbos = (self._msaa, self._behind, self._resolved, self._mask_fbo)

    # -- per-frame helpers -------------------------------------------------------------------
    def _viewproj(self, camera: Camera) -> bytes:
        if self._last_view[0] != camera:
            m = _FLIP_Y @ camera.projection_matrix(self.size) @ camera.view_matrix()
            self._last_view = (camera, _mat_bytes(m))
        return self._last_view[1]

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
        size = np.zeros(3, dtype=np.float32)
        shadow_slot = -1
        for k, light in enumerate(lamps):
            pos[k], rad[k], size[k] = light.position, light.radiance, light.size
            aim[k] = -light.position / np.linalg.norm(light.position)
            if light.casts_shadow:
                shadow_slot = k
        sun = next((light for light in lights if light.position is None), None)
        gl = self._gl
        gl.light_studio(
            {
                "u_lamp_pos": pos.tobytes(),
                "u_lamp_rad": rad.tobytes(),
                "u_lamp_aim": aim.tobytes(),
                "u_lamp_size": size.tobytes(),
                "u_shadow_lamp": shadow_slot,
                "u_own_shadow_lamp": max(
                    (k for k in range(len(lamps)) if k != shadow_slot), key=lambda k: float(rad[k].sum()), default=0
                ),
                "u_sun_dir": tuple(float(v) for v in sun.direction) if sun else (0.0, 0.0, 1.0),
                "u_sun_rad": tuple(float(v) for v in sun.radiance) if sun else (0.0, 0.0, 0.0),
                "u_sun_size": 0.25 * float(sun.size) if sun else 0.0,
            },
            tuple(float(v) for v in rad[shadow_slot]) if shadow_slot >= 0 else (0.0, 0.0, 0.0),
        )
        per_frame = {
            "u_viewproj": self._viewproj(camera),
            "u_shadow_on": 1.0 if light_vp is not None else 0.0,
            "u_grain_seed": _grain_seed(camera),
        }
        gl.ground_prog["u_grain"].value = self._grain
        if light_vp is not None:
            per_frame["u_light_vp"] = light_vp
        for name, value in per_frame.items():
            gl.share(name, value)
            uniform = gl.ground_prog.get(name, None)
            if uniform is None:
                continue
            uniform.write(value) if isinstance(value, bytes) else setattr(uniform, "value", value)
        gl.share("u_eye", tuple(float(v) for v in camera.location))

    def _screen_boxes(self, prims: list[Primitive], camera: Camera) -> list[tuple[float, float, float, float]]:
        """Pixel rectangles (u0, v0, u1, v1) that hold each object (its upright bounding box)."""
        if not prims:
            return []
        reach = np.array([[p.bound_radius if p.shape == "cube" else p.radius] * 2 + [p.half] for p in prims])
        centers = np.array([p.center for p in prims])
        u, v = camera.project(centers[:, None, :] + reach[:, None, :] * _BOX_CORNERS[None], self.size)
        return list(zip(u.min(1), v.min(1), u.max(1), v.max(1)))

    def _draw_object(self, prim: Primitive) -> None:
        surf = surface(prim.material)
        key = (surf.kind, prim.shape)
        p = self._gl.program(key)
        lobes = (*surf.lobes, (0.0, 1.0))[:2]
        for name, value in (("u_lobes", (*lobes[0], *lobes[1])), ("u_ior", surf.ior)):
            if name in p:  # rubber's program has no lamp highlights, so no lobe
                p[name].value = value
        p["u_albedo"].value = tuple(float(v) for v in prim.albedo)
        p["u_grain"].value = self._grain
        self._place(p, prim)
        self._gl.vaos[key, prim.shape, prim.size].render()

    # -- public API ----------------------------------------------------------------------------
    def render(self, state: State, camera: Camera, lamps: list[Lamp] | None = None) -> np.ndarray:
        with self._gl.current():
            return self._render(state, camera, lamps)

    def _render(self, state: State, camera: Camera, lamps: list[Lamp] | None = None) -> np.ndarray:
        lights = lamp_lights(check_inputs(state, camera, lamps))
        prims = primitives(state)
        gl, mgl = self._gl, self._gl.mgl
        ctx = gl.ctx
        ctx.enable_only(mgl.DEPTH_TEST)
        light_vp = self._shadow_pass(prims, lights)
        self._set_lights(lights, camera, light_vp)
        gl.shadow_tex.use(location=0)
        gl.irr_tex.use(location=1)
        gl.studio_tex.use(location=2)
        ctx.enable_only(mgl.DEPTH_TEST | mgl.CULL_FACE)
        ctx.front_face = "cw"  # the flipped projection reverses the winding: back faces are culled
        eye = np.asarray(camera.location)
        dist = {id(prim): float(np.linalg.norm(prim.center - eye)) for prim in prims}
        opaque = sorted((q for q in prims if not surface(q.material).glass), key=lambda q: dist[id(q)])
        glass = sorted((q for q in prims if surface(q.material).glass), key=lambda q: -dist[id(q)])
        self._msaa.use()
        self._msaa.clear(*gl.clear_color, 1.0, depth=1.0)
        for prim in opaque:
            self._draw_object(prim)
        gl.ground.render()
        drawn: list[tuple[float, float, float, float]] = []
        for prim, box in zip(glass, self._screen_boxes(glass, camera)):  # back to front: each refracts what is drawn
            if not drawn or any(_overlap(box, other) for other in drawn):
                ctx.copy_framebuffer(self._behind, self._msaa)
                self._behind_tex.use(location=3)
                self._msaa.use()
                drawn = []
            drawn.append(box)
            self._draw_object(prim)
        ctx.copy_framebuffer(self._resolved, self._msaa)
        self._resolved.read_into(self._pixels, components=3, alignment=1)
        w, h = self.size
        return np.frombuffer(self._pixels, dtype=np.uint8).reshape(h, w, 3).copy()

    def render_mask(self, state: State, camera: Camera) -> np.ndarray:
        with self._gl.current():
            return self._render_mask(state, camera)

    def _render_mask(self, state: State, camera: Camera) -> np.ndarray:
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
        """Release this renderer's framebuffers (the shared context stays; see :func:`release_shared_context`)."""
        self.closed = True
        fbos, self._fbos = self._fbos, ()
        if not fbos:
            return
        with self._gl.current():
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
