"""PyTorch: zero-copy exchange, streams, octet.torch's autograd Functions against references built
from their definition, and the Linear modules as drop-ins for torch.nn.Linear. Every case needs
torch (skipped by name without it); "cuda" cases need a GPU. The FP8 ops take f32, f16 and bf16
only, so there is no f64 gradcheck: gradients are compared with torch references instead."""
import copy

import pytest

import octet
from conftest import torch_devices

DEVICES = torch_devices()


def need_torch():
    torch = pytest.importorskip("torch")
    import octet.torch  # noqa: F401  (the module under test)
    return torch


@pytest.mark.parametrize("device", DEVICES)
def test_zero_copy_both_ways(device):
    torch = need_torch()
    x = torch.arange(4096, dtype=torch.float32, device=device) / 100
    assert octet.asarray(x).data_ptr == x.data_ptr()
    codes, state = octet.quantize_blockwise(x, blocksize=256)
    assert isinstance(codes, torch.Tensor) and codes.device == x.device and codes.dtype == torch.uint8
    assert isinstance(state.absmax, torch.Tensor) and state.absmax.data_ptr() == state.absmax.data_ptr()
    y = octet.dequantize_blockwise(codes, state)
    assert y.dtype == torch.float32 and (y - x).abs().max() < 0.01 * 41
    octet.scale_(x, torch.tensor(0.5, device=device))  # in place, in torch's memory
    assert x[2].item() == pytest.approx(0.01)
    bf = torch.randn(300, dtype=torch.bfloat16, device=device)
    assert octet.fake_quantize_blockwise(bf, None, 64).dtype == torch.bfloat16
    with pytest.raises(octet.ValueError, match="from_dlpack: argument 'dl_tensor.strides'"):
        octet.quantize(torch.ones(8, 8, device=device).t()[:, :3])


@pytest.mark.parametrize("device", DEVICES)
def test_clipping_on_torch(device):
    torch = need_torch()
    torch.manual_seed(0)
    g = torch.randn(64, 64, device=device)
    history = torch.zeros(100, device=device)
    gnorm, clip, scale = octet.percentile_clipping(g, history, 1)
    assert gnorm.device == g.device and gnorm.item() == pytest.approx(g.norm().item(), rel=1e-5)
    state = octet.ClipState(str(g.device), like=torch)
    octet.percentile_clipping(g, state)
    assert isinstance(state.gnorm_vec, torch.Tensor) and torch.equal(state.gnorm_vec, history)


@pytest.mark.skipif(not octet.cuda_available(), reason="no CUDA device")
def test_streams_follow_the_dlpack_protocol():
    torch = need_torch()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        x = torch.randn(1 << 20, device="cuda") * 3  # queued on the side stream
        codes, state = octet.quantize_blockwise(x, blocksize=4096)  # octet's stream waits for it
        y = octet.dequantize_blockwise(codes, state)  # torch's use waits for octet's stream
        err = (y - x).abs().max().item()
    assert err <= 0.01 * x.abs().max().item() * 2
    with octet.stream(torch.cuda.current_stream()):
        assert octet.current_stream("cuda") == torch.cuda.current_stream().cuda_stream
    ref, _ = octet.quantize_blockwise(x.cpu(), blocksize=4096)
    assert torch.equal(codes.cpu(), ref)  # CUDA codes equal CPU codes


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("device", DEVICES)
def test_matmul_fp8_mixed_gradients(device, dtype):
    torch = need_torch()
    from octet.torch import matmul_fp8_mixed
    if device == "cpu" and dtype == "float16":
        pytest.skip("torch's CPU f16 matmul reference is not available everywhere")
    dt = getattr(torch, dtype)
    torch.manual_seed(1)
    A = torch.randn(48, 96, device=device, dtype=dt, requires_grad=True)
    B = torch.randn(96, 80, device=device, dtype=dt, requires_grad=True)
    G = torch.randn(48, 80, device=device, dtype=dt)
    out = matmul_fp8_mixed(A, B)
    out.backward(G)
    e4m3, e5m2 = octet.Code.fp8_e4m3(), octet.Code.fp8_e5m2()
    bsz, bsz2 = octet.fp8_block_sizes(A.detach(), B.detach())
    Aq = octet.fake_quantize_blockwise(A.detach(), e4m3, bsz).float()
    Bq = octet.fake_quantize(B.detach(), e4m3).float()
    Gq = octet.fake_quantize_blockwise(G, e5m2, bsz2).float()
    tol = dict(rtol=2e-2, atol=5e-2) if dt == torch.float16 else dict(rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(out.float(), Aq @ Bq, **tol)
    torch.testing.assert_close(A.grad.float(), Gq @ Bq.t(), **tol)
    torch.testing.assert_close(B.grad.float(), A.detach().float().t() @ G.float(), **tol)


@pytest.mark.parametrize("device", DEVICES)
def test_matmul_fp8_global_only_needed_gradients(device):
    torch = need_torch()
    from octet.torch import matmul_fp8_global
    A = torch.randn(16, 32, device=device)
    B = torch.randn(32, 8, device=device, requires_grad=True)
    matmul_fp8_global(A, B).sum().backward()
    assert A.grad is None and B.grad is not None and B.grad.shape == B.shape
    with torch.no_grad():
        assert matmul_fp8_global(A, B).requires_grad is False


@pytest.mark.parametrize("kind", ["LinearFP8Mixed", "LinearFP8Global", "LinearFP8"])
@pytest.mark.parametrize("device", DEVICES)
def test_linear_modules_are_drop_in(device, kind):
    torch = need_torch()
    import octet.torch as ot
    torch.manual_seed(2)
    ref = torch.nn.Linear(128, 64, device=device)
    layer = getattr(ot, kind)(128, 64, device=device)
    assert isinstance(layer, torch.nn.Linear) and isinstance(layer.weight, torch.nn.Parameter)
    assert layer.state_dict().keys() == ref.state_dict().keys()
    layer.load_state_dict(ref.state_dict())
    x = torch.randn(32, 128, device=device, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    y, y_ref = layer(x), ref(x_ref)
    assert y.shape == y_ref.shape and y.dtype == y_ref.dtype
    assert (y - y_ref).abs().mean() < 0.05 * y_ref.abs().mean()
    y.sum().backward()
    y_ref.sum().backward()
    for ours, theirs in ((x.grad, x_ref.grad), (layer.weight.grad, ref.weight.grad), (layer.bias.grad, ref.bias.grad)):
        assert ours is not None and (ours - theirs).abs().mean() < 0.05 * theirs.abs().mean() + 1e-6
    clone = copy.deepcopy(layer)  # octet's layer is made again on first use
    assert torch.equal(clone(x.detach()), layer(x.detach()))


@pytest.mark.parametrize("recipe", ["current", "delayed"])
@pytest.mark.parametrize("device", DEVICES)
def test_matmul_fp8_real(device, recipe):
    torch = need_torch()
    from octet.torch import Fp8Scaling, matmul_fp8
    torch.manual_seed(3)
    x = torch.randn(64, 256, device=device, requires_grad=True)
    w = torch.randn(96, 256, device=device, requires_grad=True)
    b = torch.randn(96, device=device, requires_grad=True)
    scaling = Fp8Scaling(recipe, history_len=16)
    for _ in range(3):  # delayed scaling: the histories fill over the steps
        y = matmul_fp8(x, w, b, scaling)
    ref = x.detach() @ w.detach().t() + b.detach()
    assert (y - ref).abs().mean() < 0.05 * ref.abs().mean()
    y.sum().backward()
    torch.testing.assert_close(b.grad, torch.full_like(b, 64.0))
    assert (x.grad - w.detach().sum(0)).abs().mean() < 0.05 * w.detach().sum(0).abs().mean()
