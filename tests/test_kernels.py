"""Triton kernels (gantk.kernels) against torch eager: forward and gradients, patched generators, exports.

On a CPU-only machine conftest.py sets TRITON_INTERPRET=1, so the Triton kernels themselves run
(interpreted) on CPU tensors; with a GPU the same tests run the compiled kernels on CUDA tensors.
Tolerances: fp32 1e-5 of the reference's scale (max |ref|, at least 1); fp16 and bf16 6 units of
their machine epsilon (2^-10, 2^-7) of that scale, against a reference computed in fp32 from the same
rounded inputs.
"""
import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

pytest.importorskip("triton")
import gantk.kernels.instance_norm as ina  # noqa: E402
from gantk.errors import GantkError  # noqa: E402
from gantk.acceleration import FusedResidualBlock, FusedResnetBlock, fused_modules, patch  # noqa: E402
from gantk.kernels import (ACTIVATIONS, InstanceNormAct, ReflectPadConv2d, instance_norm_act,  # noqa: E402
                           reflect_pad_conv2d, use_triton)
from gantk.models import define_G  # noqa: E402
from gantk.nn.transformer import TransformerNet  # noqa: E402
from conftest import load_benchmark_script  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
REL_TOL = {"fp32": 1e-5, "fp16": 6 * 2**-10, "bf16": 6 * 2**-7}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _fp32_without_tf32(monkeypatch):
    """fp32 stays fp32 on a GPU: cuDNN's reference and our conv use TF32 only when this flag allows it."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


def assert_close(got, want, dtype, what=""):
    scale = max(want.abs().max().item(), 1.0)
    err = (got.float() - want.float()).abs().max().item()
    assert err <= REL_TOL[dtype] * scale, f"{what}: max error {err:.3g} > {REL_TOL[dtype]} x {scale:.3g}"


def leaf(t, dtype="fp32", channels_last=False):
    t = t.to(DEVICE, DTYPES[dtype])
    if channels_last:
        t = t.contiguous(memory_format=torch.channels_last)
    return t.requires_grad_()


def test_kernels_run_triton_here():
    """The tests below exercise the Triton kernels, not the torch fallback."""
    assert use_triton(torch.empty(1, device=DEVICE))


def test_kernels_compile_for_sm90():
    """Every kernel variant the launchers pick for the generators' shapes (each dtype and layout, every
    autotune config) compiles to H100 machine code with Triton's own compiler and ptxas, no GPU needed:
    catches what the interpreter lets through (types, constexpr branches, dot shapes), fits in shared
    memory, and the 16-bit ResNet-block convs load vectorised (the weight is read from a contiguous copy,
    not gathered at a stride of IC*KH*KW)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kernels.py"), "--compile-only", "--archs", "90",
                          "--batches", "1"], capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0 and "all fit" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith("90 ")]
    kernels = {r[1] for r in rows}
    assert kernels == {"in_stats_kernel", "in_fwd_kernel", "in_bwd_sums_kernel", "in_bwd_kernel", "reflect_conv_kernel"}
    convs = [r for r in rows if r[1] == "reflect_conv_kernel" and r[2] != "fp32" and "block" in r]  # 256 -> 256 ch
    assert {(r[2], r[3]) for r in convs} == {(d, lay) for d in ("fp16", "bf16") for lay in ("nchw", "nhwc")}
    assert all(int(r[8]) > 0 for r in convs), "a 16-bit 3x3 conv variant has no vectorised global load"


# --- instance_norm_act -----------------------------------------------------------------------------------
IN_CASES = [  # (shape, affine, residual, channels_last, forced tile: small tiles split each row over programs)
    ((2, 3, 5, 7), True, True, False, None),
    ((1, 4, 2, 3), False, False, True, None),
    ((3, 2, 3, 2), True, False, False, 4),
    ((1, 5, 9, 11), False, True, True, 32),
    ((2, 3, 13, 9), True, True, False, 32),
    ((4, 3, 7, 9), False, False, False, 16),  # enough rows: one program loops over its whole row
]


def check_instance_norm_act(shape, affine, residual, channels_last, activation, dtype):
    """instance_norm_act's output and all gradients against F.instance_norm + act (+ r) in fp32."""
    g = torch.Generator().manual_seed(sum(shape))
    x = leaf(torch.randn(shape, generator=g) * 3 + 1, dtype, channels_last)
    c = shape[1]
    w = leaf(torch.rand(c, generator=g) + 0.5) if affine else None
    b = leaf(torch.randn(c, generator=g)) if affine else None
    r = leaf(torch.randn(shape, generator=g), dtype) if residual else None
    y = instance_norm_act(x, w, b, activation=activation, negative_slope=0.1, residual=r)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)

    ref_in = [t.detach().float().requires_grad_() if t is not None else None for t in (x, w, b, r)]
    xf, wf, bf, rf = ref_in
    ref = F.instance_norm(xf, weight=wf, bias=bf, eps=1e-5)
    ref = {"none": ref, "relu": F.relu(ref), "leaky_relu": F.leaky_relu(ref, 0.1), "tanh": torch.tanh(ref)}[activation]
    ref = ref + rf if residual else ref
    assert_close(y, ref, dtype, "forward")

    dy = torch.randn(shape, generator=g).to(DEVICE, y.dtype)
    named = {k: (t, t_ref) for k, t, t_ref in zip("xwbr", (x, w, b, r), ref_in) if t is not None}
    grads = torch.autograd.grad(y, [t for t, _ in named.values()], dy)
    want = torch.autograd.grad(ref, [t for _, t in named.values()], dy.float())
    for (name, (t, _)), got, exp in zip(named.items(), grads, want):
        assert got.dtype == t.dtype
        assert_close(got, exp, dtype, f"d{name}")


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("shape,affine,residual,channels_last,tile", IN_CASES)
def test_instance_norm_act_matches_eager(monkeypatch, shape, affine, residual, channels_last, tile, activation, dtype):
    """Given odd/tiny sizes, both layouts and split rows, out and all gradients equal F.instance_norm + act (+ r)."""
    if tile:
        monkeypatch.setattr(ina, "TILE", tile)
    check_instance_norm_act(shape, affine, residual, channels_last, activation, dtype)


@pytest.mark.skipif(DEVICE != "cpu", reason="the CPU paths")
@pytest.mark.parametrize("path", ["c", "torch"])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("shape,affine,residual,channels_last,tile", IN_CASES + [((1, 3, 64, 67), False, True, False, None)])
def test_instance_norm_act_cpu_paths_match_eager(monkeypatch, shape, affine, residual, channels_last, tile, activation,
                                                 path):
    """Without Triton (a CPU run): fp32 NCHW goes to the C kernels (`native`, planes of any length, vector
    tails included), else, and without a compiler, to torch ops; both equal F.instance_norm + act (+ r)."""
    from gantk.kernels import native
    monkeypatch.setattr("gantk.kernels.runtime.INTERPRET", False)
    if path == "torch":
        monkeypatch.setattr(native, "library", lambda: None)
    elif native.library() is None:
        pytest.skip("the C kernels did not build here (no C compiler?)")
    check_instance_norm_act(shape, affine, residual, channels_last, activation, "fp32")


@pytest.mark.skipif(DEVICE != "cpu", reason="the C kernels")
def test_c_instance_norm_statistics_of_a_1024px_plane_match_float64():
    """A 1024 x 1024 plane (the generators' first maps at 1024 px) with an offset: mean, 1/std and the output
    against float64 to 2e-6 (one running float sum per vector lane, as before, put the mean 4e-6 off), and
    the backward's sums (the input gradient) against float64 too."""
    from gantk.kernels import native
    if native.library() is None:
        pytest.skip("the C kernels did not build here (no C compiler?)")
    torch.manual_seed(0)
    x = 3 + torch.randn(1, 2, 1024, 1024)
    y, mean, rstd = native.instance_norm_act(x, None, None, 1e-5, "none", 0.0, None)
    x64 = x.double()
    m64, v64 = x64.mean((2, 3)), x64.var((2, 3), unbiased=False)
    assert (mean - m64).abs().max() < 2e-6 and ((rstd - (v64 + 1e-5).rsqrt()) / rstd).abs().max() < 2e-6
    assert (y - F.instance_norm(x64)).abs().max() < 2e-6
    dy = torch.randn_like(x)
    dx = native.instance_norm_act_backward(dy, x, None, None, mean, rstd, "none", 0.0)[0]
    x64.requires_grad_()
    want, = torch.autograd.grad(F.instance_norm(x64), x64, dy.double())
    assert (dx - want).abs().max() < 2e-5 * want.abs().max()


def test_instance_norm_act_statistics_are_fp32_for_large_offsets():
    """fp16 input with a large mean and small spread: fp32 statistics keep the normalised values exact."""
    x = (1000 + torch.randn(1, 2, 4, 5)).to(DEVICE, torch.float16)
    y = instance_norm_act(x, activation="none")
    ref = F.instance_norm(x.float())
    assert_close(y, ref, "fp16")


def test_instance_norm_act_rejects_bad_input():
    x = torch.randn(1, 3, 4, 4, device=DEVICE)
    with pytest.raises(GantkError, match="activation 'gelu'"):
        instance_norm_act(x, activation="gelu")
    with pytest.raises(GantkError, match="weight of shape"):
        instance_norm_act(x, torch.ones(4, device=DEVICE))
    with pytest.raises(GantkError, match="residual of shape"):
        instance_norm_act(x, residual=torch.ones(1, 3, 4, 5, device=DEVICE))
    with pytest.raises(GantkError, match="NCHW"):
        instance_norm_act(torch.randn(3, 4, 4, device=DEVICE))


# --- reflect_pad_conv2d ----------------------------------------------------------------------------------
CONV_CASES = [  # (N, IC, H, W, OC, k, padding, stride, bias, channels_last)
    (2, 3, 5, 7, 4, 3, 1, 1, True, False),
    (1, 5, 2, 3, 3, 3, 1, 1, False, True),     # H = 2: the reflection of a 2-row image
    (2, 4, 3, 3, 6, 3, 1, 2, True, False),     # stride 2
    (1, 3, 8, 6, 2, 7, 3, 1, True, True),      # ResNet's 7x7 first/last conv
    (1, 37, 5, 4, 40, 3, 1, 1, True, False),   # channels past one tile on both sides
    (1, 2, 5, 6, 3, 9, 4, 2, False, False),    # TransformerNet-style 9x9, stride 2
]


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("n,ic,h,w,oc,k,p,s,bias,channels_last", CONV_CASES)
def test_reflect_pad_conv2d_matches_eager(n, ic, h, w, oc, k, p, s, bias, channels_last, dtype):
    """Given odd, tiny and strided shapes, out and gradients equal F.pad(reflect) + F.conv2d (in fp32)."""
    g = torch.Generator().manual_seed(n * 100 + ic + k)
    x = leaf(torch.randn(n, ic, h, w, generator=g), dtype, channels_last)
    wt = leaf(torch.randn(oc, ic, k, k, generator=g) / k, dtype)
    b = leaf(torch.randn(oc, generator=g), dtype) if bias else None
    y = reflect_pad_conv2d(x, wt, b, padding=p, stride=s)
    assert y.dtype == x.dtype
    ref_in = [t.detach().float().requires_grad_() for t in (x, wt, b) if t is not None]
    ref = F.conv2d(F.pad(ref_in[0], (p,) * 4, mode="reflect"), ref_in[1], ref_in[2] if bias else None, s)
    assert y.shape == ref.shape
    # low precision: the reference sums exactly-representable products in fp32, as the kernel does;
    # the error scale is the sum of |terms|, not the result
    scale_ref = F.conv2d(F.pad(ref_in[0].abs(), (p,) * 4, mode="reflect"), ref_in[1].abs(), None, s)
    err = (y.float() - ref).abs().max().item()
    assert err <= REL_TOL[dtype] * max(scale_ref.max().item(), 1.0), err
    dy = torch.randn(ref.shape, generator=g).to(DEVICE, y.dtype)
    grads = torch.autograd.grad(y, [t for t in (x, wt, b) if t is not None], dy)
    want = torch.autograd.grad(ref, ref_in, dy.float())
    for name, got, exp in zip("xwb", grads, want):
        tol = REL_TOL[dtype] * (8 if name != "x" and dtype != "fp32" else 1)  # dw/db sum many low-precision terms
        err = (got.float() - exp).abs().max().item()
        assert err <= tol * max(exp.abs().max().item(), 1.0), (name, err)


def test_reflect_pad_conv2d_rejects_bad_input():
    x = torch.randn(1, 3, 3, 3, device=DEVICE)
    with pytest.raises(GantkError, match="reflect padding 3"):
        reflect_pad_conv2d(x, torch.randn(2, 3, 7, 7, device=DEVICE), padding=3)
    with pytest.raises(GantkError, match="input channels"):
        reflect_pad_conv2d(x, torch.randn(2, 4, 3, 3, device=DEVICE))
    with pytest.raises(GantkError, match="share a dtype"):
        reflect_pad_conv2d(x, torch.randn(2, 3, 3, 3, device=DEVICE, dtype=torch.float16))


# --- torch.library registration ----------------------------------------------------------------------------
def chain(x, w, b, gamma, beta):
    """pad-conv -> IN + ReLU -> pad-conv -> IN + residual: a ResnetBlock."""
    h = instance_norm_act(reflect_pad_conv2d(x, w, b), gamma, beta, activation="relu")
    return instance_norm_act(reflect_pad_conv2d(h, w, b), gamma, beta, activation="none", residual=x)


def chain_inputs():
    g = torch.Generator().manual_seed(3)
    x, w = torch.randn(2, 4, 5, 6, generator=g), torch.randn(4, 4, 3, 3, generator=g) / 3
    b, gamma, beta = torch.randn(4, generator=g), torch.rand(4, generator=g) + 0.5, torch.randn(4, generator=g)
    return [leaf(t) for t in (x, w, b, gamma, beta)]


def test_opcheck_fake_kernels_and_autograd():
    """torch.library.opcheck: schemas, fake (meta) kernels and registered autograd agree with the real ops."""
    x, w, b, gamma, beta = chain_inputs()
    torch.library.opcheck(torch.ops.gantk.reflect_pad_conv2d.default, (x, w, b, 1, 1))
    torch.library.opcheck(torch.ops.gantk.instance_norm_act.default, (x, gamma, beta, 1e-5, "relu", 0.2, x.detach()))


@pytest.mark.parametrize("torch_path", [False, True], ids=["triton", "torch-fallback"])
def test_compile_fullgraph_matches_eager(monkeypatch, torch_path):
    """torch.compile(fullgraph=True) traces both ops (no graph break) and gives eager's values and gradients."""
    if torch_path:
        monkeypatch.setattr("gantk.kernels.runtime.INTERPRET", False)
        monkeypatch.setattr("gantk.kernels.runtime.HAS_TRITON", False)
    torch._dynamo.reset()
    inputs = chain_inputs()
    compiled = torch.compile(chain, fullgraph=True, backend="aot_eager" if torch_path else "inductor")
    y, want = compiled(*inputs), chain(*inputs)
    assert_close(y, want, "fp32", "forward")
    for got, exp in zip(torch.autograd.grad(y.sum(), inputs), torch.autograd.grad(want.sum(), inputs)):
        assert_close(got, exp, "fp32", "grad")


# --- patch(model) --------------------------------------------------------------------------------------------
def resnet(dropout=False):
    torch.manual_seed(0)
    return define_G(3, 3, 4, "resnet_6blocks", norm="instance", use_dropout=dropout).to(DEVICE)


def grads_of(net, x):
    net.zero_grad()
    out = net(x)
    out.square().mean().backward()
    return out.detach(), {k: p.grad.clone() for k, p in net.named_parameters()}


@pytest.mark.parametrize("channels_last", [False, True])
def test_patched_resnet_generator_matches_unpatched(channels_last):
    """Given a ResNet generator, patch() fuses its chains in place: same keys and Parameters, same output
    and gradients (fp32, 1e-4 of their scale), and the unpatched state dict loads strictly."""
    ref = resnet()
    net = copy.deepcopy(ref)
    params = [id(p) for p in net.parameters()]
    assert patch(net) is net
    assert list(net.state_dict()) == list(ref.state_dict()) and [id(p) for p in net.parameters()] == params
    kinds = [type(m) for m in net.modules()]
    assert kinds.count(ReflectPadConv2d) == 14 and kinds.count(InstanceNormAct) == 17
    assert kinds.count(FusedResnetBlock) == 6 and nn.ReflectionPad2d not in kinds and nn.InstanceNorm2d not in kinds
    net.load_state_dict(ref.state_dict(), strict=True)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 3, 12, 16, generator=torch.Generator().manual_seed(1)).to(DEVICE, memory_format=fmt)
    if channels_last:
        net.to(memory_format=fmt)
    out, grads = grads_of(net, x)
    want, want_grads = grads_of(ref, x)
    assert (out - want).abs().max() <= 1e-4
    for k in want_grads:
        assert (grads[k] - want_grads[k]).abs().max() <= 1e-4 * want_grads[k].abs().max() + 1e-6, k


@pytest.mark.skipif(DEVICE != "cpu", reason="the C kernels")
def test_fused_norm_after_a_conv_overwrites_its_input_only_without_autograd(monkeypatch):
    """patch() marks a fused norm `inplace` where a conv's fresh output is its input (every norm of the ResNet
    generator), not elsewhere; without autograd the C kernel then writes over its input and returns it (values
    as F.instance_norm + relu), with autograd it leaves its input alone; the patched generator's output under
    no_grad still equals the unpatched one."""
    from gantk.kernels import native
    monkeypatch.setattr("gantk.kernels.runtime.INTERPRET", False)  # the C kernels, not Triton's interpreter
    if native.library() is None:
        pytest.skip("the C kernels did not build here (no C compiler?)")
    ref = resnet().eval()
    net = patch(copy.deepcopy(ref))
    assert all(m.inplace for m in net.modules() if isinstance(m, InstanceNormAct))
    alone = patch(nn.Sequential(nn.Identity(), nn.InstanceNorm2d(4, affine=True), nn.ReLU()))
    assert isinstance(alone[1], InstanceNormAct) and not alone[1].inplace
    norm = copy.deepcopy(alone[1])
    norm.inplace = True
    x = torch.randn(2, 4, 9, 10, generator=torch.Generator().manual_seed(0))
    want = F.relu(F.instance_norm(x, weight=norm.weight, bias=norm.bias))
    with torch.no_grad():
        t = x.clone()
        y = norm(t)
    assert y.data_ptr() == t.data_ptr() and (y - want).abs().max() < 1e-5
    t = x.clone().requires_grad_()
    y = norm(t)
    assert y.data_ptr() != t.data_ptr() and torch.equal(t.detach(), x) and (y - want).abs().max() < 1e-5
    x = torch.rand(1, 3, 20, 24, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        assert (net(x) - ref(x)).abs().max() < 1e-4


def test_amp_compile_kernels_matches_eager_autocast():
    """The bench's amp+compile+kernels path: a patched generator under autocast (bf16 on CPU, fp16 on a GPU)
    compiles with fullgraph=True and gives the unpatched autocast output within 16-bit rounding."""
    ref = resnet().eval()
    net = patch(copy.deepcopy(ref))
    dtype = torch.float16 if DEVICE == "cuda" else torch.bfloat16
    torch._dynamo.reset()

    def run(m, x):
        with torch.autocast(DEVICE, dtype=dtype):
            return m(x)
    compiled = torch.compile(lambda x: run(net, x), fullgraph=True)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3)).to(DEVICE) * 2 - 1
    with torch.no_grad():
        got, want, exact = compiled(x), run(ref, x), ref(x)
    assert got.dtype == want.dtype and got.shape == exact.shape
    err, budget = (got.float() - exact).abs(), (want.float() - exact).abs()  # autocast's own rounding error
    assert err.mean() <= 2 * budget.mean() + 1e-3 and err.max() <= 2 * budget.max() + 1e-2, (err.max(), budget.max())


def test_patched_generator_with_dropout_keeps_keys():
    ref = resnet(dropout=True).eval()
    net = patch(copy.deepcopy(ref))
    assert list(net.state_dict()) == list(ref.state_dict())
    x = torch.randn(1, 3, 8, 8, device=DEVICE)
    with torch.no_grad():
        assert (net(x) - ref(x)).abs().max() <= 1e-4


def test_patched_transformer_net_matches_unpatched():
    torch.manual_seed(0)
    ref = TransformerNet().to(DEVICE)
    net = patch(copy.deepcopy(ref))
    assert list(net.state_dict()) == list(ref.state_dict())
    assert sum(isinstance(m, FusedResidualBlock) for m in net.modules()) == 5
    x = torch.rand(1, 3, 12, 10, generator=torch.Generator().manual_seed(2)).to(DEVICE) * 2 - 1
    out, grads = grads_of(net, x)
    want, want_grads = grads_of(ref, x)
    assert (out - want).abs().max() <= 1e-4 * want.abs().max()
    for k in want_grads:
        assert (grads[k] - want_grads[k]).abs().max() <= 1e-3 * want_grads[k].abs().max() + 1e-6, k


def test_batchnorm_unet_is_left_unpatched():
    """pix2pix's U-Net (BatchNorm, LeakyReLU before conv) has no matching chain."""
    net = define_G(3, 3, 4, "unet_128", norm="batch")
    assert fused_modules(patch(net)) == 0


def test_patch_rejects_a_bare_module():
    with pytest.raises(GantkError, match="whole network"):
        patch(nn.InstanceNorm2d(3))


# --- exports of a patched model -------------------------------------------------------------------------------
def test_onnx_export_of_patched_generator_is_the_standard_graph(tmp_path):
    """A patched generator exports to the same standard ONNX ops as the unpatched one (no custom domain),
    and ONNX Runtime reproduces the unpatched eager output."""
    pytest.importorskip("onnxruntime")
    from gantk.export import OrtRunner, export_onnx, spec_for_generator
    from gantk.export.onnx import load_onnx
    ref = resnet().cpu().eval()
    net = patch(copy.deepcopy(ref))
    graphs = {}
    for name, g in (("plain", ref), ("patched", net)):
        path = export_onnx(spec_for_generator(copy.deepcopy(g), "cyclegan"), tmp_path / f"{name}.onnx", size=32)
        model = load_onnx(path)
        graphs[name] = [(n.domain, n.op_type) for n in model.graph.node]
    assert graphs["patched"] == graphs["plain"]
    assert {d for d, _ in graphs["patched"]} <= {"", "ai.onnx"}
    x = torch.rand(2, 3, 40, 36) * 2 - 1
    with torch.no_grad():
        want = ref(x).numpy()
    got = OrtRunner(tmp_path / "patched.onnx")(x)
    assert abs(got - want).max() < 1e-4


def test_torch_export_of_patched_generator_has_no_custom_ops():
    """torch.export (the AOTInductor route) records aten ops only."""
    net = patch(resnet().cpu().eval())
    ep = torch.export.export(net, (torch.randn(1, 3, 16, 16),))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert not [t for t in targets if "gantk" in t], targets


# --- training and the benchmark script -----------------------------------------------------------------------
def test_train_option_kernels_triton_patches_nets_and_matches_eager(monkeypatch):
    """--kernels triton (TrainConfig.kernels) patches every net in setup(); the first step matches eager.
    The fused modules take their torch path here: a whole train step is too slow for the interpreter."""
    from test_train import assert_first_step_matches_eager

    from gantk.models.cyclegan import CycleGANConfig, CycleGANModel
    monkeypatch.setattr("gantk.kernels.runtime.INTERPRET", False)
    model = CycleGANModel(CycleGANConfig(netG="resnet_6blocks", ngf=4, ndf=4, crop_size=32, kernels="triton"))
    model.setup()
    assert all(fused_modules(net) > 0 for net in model.nets.values())  # D: Conv -> IN + LeakyReLU
    assert_first_step_matches_eager(kernels="triton")


def test_cli_train_and_translate_with_kernels(monkeypatch, sample_data, tmp_path, capsys):
    """`gantk train/translate --kernels triton` run (torch path of the fused modules, as on a CPU) and
    translate to the same images as without; --tile refuses the kernels."""
    from conftest import tiny_args

    from gantk.cli import main
    from gantk.io import load_image, pil_to_tensor
    monkeypatch.setattr("gantk.kernels.runtime.INTERPRET", False)
    assert main(tiny_args(sample_data["unaligned"], tmp_path, "k", max_iters=1, kernels="triton")) == 0
    images = {}
    for kernels in ("none", "triton"):
        out = tmp_path / kernels
        assert main(["translate", "--name", "k", "--checkpoints_dir", str(tmp_path), "--num_test", "2",
                     "--dataroot", str(sample_data["unaligned"]), "--output", str(out), "--kernels", kernels]) == 0
        images[kernels] = [pil_to_tensor(load_image(f)) for f in sorted(out.glob("images/*_fake.png"))]
    assert len(images["triton"]) == 2
    assert all((a - b).abs().max() <= 2 / 255 + 1e-6 for a, b in zip(images["triton"], images["none"]))  # <= 1 level
    assert main(["translate", "--name", "k", "--checkpoints_dir", str(tmp_path), "--tile", "16",
                 "--dataroot", str(sample_data["unaligned"]), "--kernels", "triton"]) != 0
    assert "--kernels none" in capsys.readouterr().err


def test_benchmark_script_interpret_smoke(tmp_path):
    """benchmarks/kernels.py --interpret runs a tiny case of every chain and writes no results file."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kernels.py"), "--interpret"], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "instance_norm_act" in out.stdout and "reflect_pad_conv2d" in out.stdout
    assert not (tmp_path / "benchmarks").exists()
    if not torch.cuda.is_available():
        refused = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kernels.py")], capture_output=True,
                                 text=True, timeout=120, cwd=tmp_path)
        assert refused.returncode == 2 and "no CUDA GPU" in refused.stderr


def test_benchmark_runs_split_by_dtype_add_up():
    """A GPU run split over calls (--dtypes fp16, then bf16) keeps the earlier rows it did not re-measure,
    and only from the same device and versions."""
    kb = load_benchmark_script("kernels")

    def row(dtype, ms):
        return {"kind": "in", "case": "in_relu", "dtype": dtype, "shape": [1, 64, 8, 8], "ours_ms": ms}
    first = {"device": "H", "torch": "2.11", "triton": "3.6", "date": "d1", "rows": [row("fp16", 1.0), row("bf16", 2.0)]}
    second = {"device": "H", "torch": "2.11", "triton": "3.6", "date": "d2", "rows": [row("fp16", 3.0)]}
    both = kb.merged(second, first)
    assert sorted((r["dtype"], r["ours_ms"]) for r in both["rows"]) == [("bf16", 2.0), ("fp16", 3.0)]
    assert both["dates"] == ["d1", "d2"]
    assert kb.merged(second, {**first, "torch": "2.12"})["rows"] == second["rows"]


def test_train_step_configs_pick_kernels_by_device():
    """benchmarks/train_step.py: winograd configs by default on CPU, Triton ones on CUDA, never both."""
    ts = load_benchmark_script("train_step")
    assert "amp+compile+triton" in ts.CONFIGS and not any("winograd" in c and "triton" in c for c in ts.CONFIGS)
    cpu, cuda = ts.default_configs("cpu"), ts.default_configs("cuda")
    assert "winograd" in cpu and not any("triton" in c for c in cpu)
    assert "amp+compile+triton" in cuda and not any("winograd" in c for c in cuda) and len(cpu) == len(cuda) == 16


def test_train_step_parts_split_a_step_by_kind_of_op():
    """benchmarks/train_step.py --parts: bmm/mm are GEMMs, torch's convolutions (forward and backward) are
    convolutions, and what runs outside torch ops (here a 0.2 s sleep) is in the rest of the wall time."""
    import time
    ts = load_benchmark_script("train_step")
    assert [ts.op_kind(n) for n in ("aten::bmm", "aten::mm", "aten::convolution_backward", "aten::mkldnn_convolution",
                                    "aten::conv_transpose2d", "aten::copy_", "_Winograd")] == \
        ["GEMMs", "GEMMs", "convolutions", "convolutions", "convolutions", "rest", "rest"]
    a, x = torch.randn(8, 64, 64), torch.randn(1, 8, 32, 32, requires_grad=True)
    w = torch.randn(8, 8, 3, 3, requires_grad=True)

    def step():
        torch.bmm(a, a)
        torch.nn.functional.conv2d(x, w, padding=1).sum().backward()
        time.sleep(0.2)

    parts = ts.step_parts(step)
    assert parts["GEMMs"] > 0 and parts["convolutions"] > 0 and parts["rest"] >= 0.2
    assert parts["total"] == pytest.approx(parts["GEMMs"] + parts["convolutions"] + parts["rest"])
    assert parts["GEMMs"] + parts["convolutions"] < parts["total"] - 0.2
    assert parts["gemm_gflops_per_s"] == pytest.approx(2 * 8 * 64 ** 3 / parts["GEMMs"] / 1e9)  # the one bmm
