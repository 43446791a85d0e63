"""The `gantk` command: train, translate, export, bench, data. Errors print as one line, never a traceback."""
from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path
from dataclasses import fields

import click

from gantk.acceleration import KERNELS, KERNELS_HELP
from gantk.config import DIRECTIONS, NORMS, PREPROCESS
from gantk.models.registry import FAMILIES, get_family
from gantk.nn.bicycle import NONLINEARITIES
from gantk.nn.inception import BACKENDS as FID_BACKENDS
from gantk.nn.inference import BN_MODES
from gantk.nn.lpips import NETS as LPIPS_NETS
from gantk.stylize import OPTIMIZERS
from gantk.errors import GantkError


def config_options(config_cls) -> list[click.Option]:
    """Click options generated from a config dataclass (reference names, e.g. --lambda_A, --no_dropout)."""
    options = []
    for f in fields(config_cls):
        md, default = f.metadata, f.default
        if isinstance(default, bool):
            decl = f"--{f.name}" + (f"/--{md['off']}" if md.get("off") else "")
            options.append(click.Option([decl, f.name], is_flag=True, default=default, help=md.get("help"),
                                        show_default=bool(md.get("off"))))
        else:
            typ = click.Choice(md["choices"]) if md.get("choices") else type(default)
            options.append(click.Option([f"--{f.name}", f.name], type=typ, default=default,
                                        show_default=True, help=md.get("help")))
    return options


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="gantk")
def cli():
    """gantk: train CycleGAN-style image-to-image GANs and ship them fast."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                               "help_option_names": []})
@click.option("--model", default="cyclegan", show_default=True, help=f"model family: {', '.join(FAMILIES)}")
@click.option("--nproc_per_node", type=click.IntRange(min=1), default=1, show_default=True,
              help="data-parallel processes on this machine (as torchrun's), launched by gantk")
@click.pass_context
def train(ctx, model, nproc_per_node):
    """Train a model family (--model); `gantk train --model NAME --help` lists its options."""
    family = get_family(model)
    config_cls = family.config_class

    def run(**values):
        from gantk.train import train as run_training
        if nproc_per_node == 1:
            return run_training(config_cls(**values))
        from gantk.train.distributed import launch
        from gantk.train.engine import check_config
        check_config(config_cls(**values))  # bad options: one line here, not one per process
        launch(nproc_per_node, ["train", "--model", model, *ctx.args])

    others = "\n".join(f"  {f.name:<11} {f.summary}" for f in FAMILIES.values())
    cmd = click.Command(f"train --model {model}", params=config_options(config_cls), callback=run,
                        help=f"Train {model}: {family.summary}. Defaults follow the reference recipe.\n\n"
                             f"--model picks the family:\n\n\b\n{others}",
                        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
    cmd.main(ctx.args, prog_name=f"gantk train --model {model}", standalone_mode=False)


def _with(options: list):
    """Apply click option decorators in the order listed."""
    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f
    return decorate


_NAME = click.option("--name", help="experiment name (reads <checkpoints_dir>/<name>/<epoch>_net_<which>.pth)")
_GENERATOR_FILE = [
    click.option("--checkpoints_dir", default="./checkpoints", show_default=True),
    click.option("--epoch", default="latest", show_default=True, help="which saved epoch"),
    click.option("--direction", type=click.Choice(DIRECTIONS), default="AtoB", show_default=True),
    click.option("--which", default=None, help="network to run (G_A/G_B for CycleGAN, G); default from --direction"),
    click.option("--weights", type=click.Path(dir_okay=False), help="a generator file, e.g. a downloaded latest_net_G.pth"),
    click.option("--netG", "netG", default=None, help="architecture of --weights (default: from the checkpoint; "
                 "export/bench with --netG alone: a randomly initialised one)"),
    click.option("--ngf", type=int, default=None, help="generator width (default: from the checkpoint, else 64)"),
    click.option("--norm", type=click.Choice(NORMS), default=None),
    click.option("--no_dropout/--dropout", "no_dropout", default=None),
    click.option("--input_nc", type=int, default=None),
    click.option("--output_nc", type=int, default=None),
]
# options naming a generator: a trained experiment or a generator file (translate) ...
generator_file = _with([_NAME, *_GENERATOR_FILE])
# ... plus its family and the BatchNorm mode baked into exports (export, bench)
generator_source = _with([
    _NAME,
    click.option("--model", type=click.Choice(["auto", *(f.name for f in FAMILIES.values() if f.exportable)]),
                 default="auto", show_default=True, help="generator family (auto: from the experiment's options)"),
    *_GENERATOR_FILE,
    click.option("--bn_mode", type=click.Choice(BN_MODES), default="batch", show_default=True,
                 help="BatchNorm generators (pix2pix): per-image statistics as the reference test script, "
                      "or running statistics (its --eval)"),
])

# LPIPS v0.1 (translate --metrics, eval, export/bench: each output vs eager's); left out without its two weights files
_LPIPS = [
    click.option("--lpips-net", "lpips_net", type=click.Choice(list(LPIPS_NETS)), default="alex", show_default=True,
                 help="LPIPS backbone"),
    click.option("--lpips-weights", "lpips_weights", default=None, help="the published LPIPS v0.1 heads "
                 "(lpips/weights/v0.1/<net>.pth; default: $GANTK_LPIPS; without them LPIPS is left out)"),
    click.option("--lpips-backbone", "lpips_backbone", default=None,
                 help="torchvision's alexnet-owt-7be5be79.pth or vgg16-397923af.pth (default: $GANTK_LPIPS_BACKBONE)"),
]


@cli.command()
@generator_file
@click.option("--dataroot", type=click.Path(file_okay=False),
              help="data set: translates <dataroot>/<phase>A (or B), or the A|B pairs in <dataroot>/<phase>/")
@click.option("--phase", default="test", show_default=True)
@click.option("--input", "input_path", type=click.Path(), help="an image file or a folder of images")
@click.option("--output", type=click.Path(), help="output folder (default: ./results/<name>/test_<epoch>)")
@click.option("--preprocess", type=click.Choice(PREPROCESS),
              default="none", show_default=True, help="none keeps full resolution (rounded to the net's multiple)")
@click.option("--load_size", type=int, default=256, show_default=True)
@click.option("--crop_size", type=int, default=256, show_default=True)
@click.option("--num_test", type=int, default=50, show_default=True, help="translate at most this many images "
              "(-1: all)")
@click.option("--tile", type=int, default=0, help="translate in tiles of this many px (0: whole image)")
@click.option("--tile_overlap", type=int, default=32, show_default=True, help="overlap between tiles, px")
@click.option("--tile_stats_size", type=int, default=1024, show_default=True,
              help="InstanceNorm statistics for all tiles come from the image scaled to at most this many px "
              "(an InstanceNorm net's image no larger than this is translated whole, in that one pass)")
@click.option("--model", type=click.Choice([f.name for f in FAMILIES.values() if f.inference != "none"]), default=None,
              help="model family (default: from the experiment or file, else one generator as for CycleGAN/pix2pix); "
              "bicyclegan samples several outputs per input")
@click.option("--eval/--no-eval", "eval_mode", default=None,
              help="BatchNorm running statistics and no dropout (--eval), or the batch's statistics with dropout "
              "on (--no-eval); default as the reference test scripts: --no-eval for nets with BatchNorm (pix2pix)")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of random z and test-time dropout")
@click.option("--aligned", is_flag=True, help="--input images are A|B pairs side by side (as --dataroot <phase>/)")
@click.option("--n_samples", type=int, default=5, show_default=True, help="bicyclegan: random-z outputs per input")
@click.option("--sync", is_flag=True, help="bicyclegan: the same z list for every input")
@click.option("--encoder", type=click.Path(dir_okay=False), help="bicyclegan: the encoder file (latest_net_E.pth) "
              "for the encoded-style output")
@click.option("--nz", type=int, default=None, help="bicyclegan: length of z (default: from the checkpoint, else 8)")
@click.option("--nl", type=click.Choice(tuple(NONLINEARITIES)), default=None,
              help="bicyclegan: generator non-linearity (default: from the experiment, else relu)")
@click.option("--kernels", type=click.Choice(KERNELS), default="none", show_default=True, help=KERNELS_HELP)
@click.option("--device", default="auto", show_default=True)
@click.option("--metrics", "score", is_flag=True, help="score each output against its target (A|B pairs, or "
              "--reference): PSNR, SSIM, MAE (+ LPIPS) per image and mean, in translate.json and the page")
@click.option("--reference", type=click.Path(file_okay=False), default=None,
              help="target images matched to the inputs by name (x.png <-> x.jpg), shown and scored as _target")
@_with(_LPIPS)
def translate(**o):
    """Translate images with a trained or official generator; writes images, index.html, translate.json."""
    from gantk.translate import describe_scores, run_translate
    out = run_translate(**o)
    record = json.loads((out / "translate.json").read_text())
    if "metrics" in record:
        click.echo(f"mean over {len(record['metrics']['per_image'])} images vs their targets: "
                   f"{describe_scores(record['metrics']['mean'])}")
    if "diversity" in record:
        click.echo(f"diversity (mean pairwise L1 of {record['n_samples']} random samples per input, [-1, 1] "
                   f"images): {record['diversity']['mean']:.4f}")
    click.echo(f"wrote {out}")


@cli.command()
@click.option("--content", required=True, type=click.Path(dir_okay=False), help="the content image")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="the output image (.png, .jpg)")
@click.option("--style", type=click.Path(dir_okay=False), help="style image: optimise the output (Gatys et al.)")
@click.option("--model", type=click.Path(dir_okay=False),
              help="a trained fast_style network (latest_state.pt, *_net_G.pth, or a pytorch/examples .pth): one pass")
@click.option("--vgg-weights", help="torchvision's vgg19-dcbb9e9d.pth (default: $GANTK_VGG19)")
@click.option("--size", type=int, default=None,
              help="longer side of the output at most this many px [default: 400 with --style, as is with --model]")
@click.option("--style-size", type=int, default=None, help="longer side of the style image at most [default: --size]")
@click.option("--steps", type=int, default=2000, show_default=True, help="optimisation steps (L-BFGS: loss evaluations)")
@click.option("--content-weight", type=float, default=1.0, show_default=True)
@click.option("--style-weight", type=float, default=1e6, show_default=True)
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adam", show_default=True)
@click.option("--lr", type=float, default=None, help="learning rate [default: 0.003 Adam, 1 L-BFGS]")
@click.option("--beta1", type=float, default=0.5, show_default=True, help="Adam beta1")
@click.option("--style-layers", default="relu1_1,relu2_1,relu3_1,relu4_1,relu5_1", show_default=True,
              help="VGG19 layers of the style loss (reluN_M: after the ReLU, as Gatys; convN_M: before it, as the PyTorch tutorial)")
@click.option("--content-layer", default="relu4_2", show_default=True, help="VGG19 layer of the content loss")
@click.option("--init", type=click.Choice(["content", "noise"]), default="content", show_default=True,
              help="start from the content image or from uniform noise")
@click.option("--save-every", type=int, default=0, show_default=True,
              help="also write the image every this many steps (O_step00400.png; 0: never)")
@click.option("--amp", is_flag=True, help="bf16 autocast for the network passes (Gram matrices and losses in fp32)")
@click.option("--device", default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the noise start")
def stylize(style_layers, **o):
    """Style transfer: optimise an image against --style (Gatys), or run a trained --model (Johnson)."""
    from gantk.stylize import run_stylize
    layers = [n.strip() for n in style_layers.split(",") if n.strip()]
    click.echo(f"wrote {run_stylize(style_layers=layers, **o)}")


@cli.group()
def data():
    """Data set helpers."""


@data.command("sample")
@click.option("--out", type=click.Path(), default="./datasets", show_default=True)
@click.option("--size", type=int, default=128, show_default=True, help="image size, px")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="rebuild even if the sets exist")
def data_sample(out, size, seed, overwrite):
    """Build the offline sample data sets from photographs shipped with scikit-image, and MNIST-style
    IDX files from scikit-learn's handwritten digits."""
    from gantk.data.sample import build_digits, build_sample_data
    from gantk.io import check_writable
    check_writable(out, "--out", folder=True)
    if size < 8:
        raise GantkError(f"--size must be at least 8 px, got {size}")
    for kind, path in build_sample_data(out, seed=seed, size=size, overwrite=overwrite).items():
        click.echo(f"{kind}: {path}")
    try:
        click.echo(f"digits: {build_digits(out, overwrite=overwrite)}")
    except RuntimeError as e:  # scikit-learn missing: the photo sets are still usable
        click.echo(f"digits: skipped ({e})")


def _sizes(text: str, option: str = "--sizes") -> list[int]:
    """Comma-separated positive integers, else a one-line GantkError naming `option`."""
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise GantkError(f"{option} {text}: expected comma-separated positive integers, e.g. 128,256")
    return values


# quality figures of export/bench beside max error and PSNR: LPIPS vs eager, FID change vs a reference set
_QUALITY = _with([
    *_LPIPS,
    click.option("--eval_images", type=click.Path(), default=None, help="reference images (e.g. the target "
                 "domain's test set): records FID(outputs, DIR) - FID(eager outputs, DIR) per artifact/backend"),
    click.option("--inception-weights", "inception_weights", default=None,
                 help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth for --eval_images (default: $GANTK_INCEPTION)"),
])


def _command_line(ctx: click.Context) -> str:
    """The command as it could be retyped: the options whose values differ from their defaults."""
    words = ["gantk", ctx.info_name]
    for p in ctx.command.params:
        v = ctx.params.get(p.name)
        if v is None or v == p.default:
            continue
        if isinstance(v, bool):
            words += [p.opts[0]] if v else p.secondary_opts[:1]  # a plain flag's False is its absence
        else:
            words += [p.opts[0], str(v)]
    return " ".join(words)


@cli.command("export")
@generator_source
@click.option("--format", "formats", default="onnx", show_default=True,
              help="comma-separated: onnx, onnx-fp16, aoti, trt, trt-fp16, trt-bf16, openvino, triton-repo, "
              "safetensors")
@click.option("--out", type=click.Path(), help="output folder (default ./exports/<name>); its content is replaced "
              "only when every artifact passes parity")
@click.option("--parity_images", type=click.Path(exists=True), help="real images for the parity check "
              "(default: scikit-image's sample photos)")
@click.option("--parity_sizes", default=None, help="two or more sizes, px (default: 2x and 4x the size multiple, "
              "at least 64 px)")
@click.option("--opset", type=int, default=17, show_default=True)
@click.option("--max_batch", type=int, default=8, show_default=True, help="largest batch (TensorRT profile, AOTI, Triton)")
@click.option("--opt_size", type=int, default=256, show_default=True, help="TensorRT profile's optimal size, px")
@click.option("--max_size", type=int, default=1024, show_default=True, help="largest height/width, px")
@click.option("--device", default="cpu", show_default=True, help="where AOTI compiles/parity runs: cpu or cuda")
@click.option("--verify", type=click.Path(), default=None, help="export nothing: check the files of this export "
              "folder against its manifest's checksums and re-run its parity checks")
@_QUALITY
@click.option("--quality_gate", default=None, help="fail the export (like a parity miss) when an artifact's worst "
              "LPIPS vs eager or its FID change exceeds a limit, e.g. lpips=0.01 or lpips=0.01,fid=0.5")
def export_cmd(formats, out, parity_images, parity_sizes, opset, max_batch, opt_size, max_size, device, verify,
               lpips_net, lpips_weights, lpips_backbone, eval_images, inception_weights, quality_gate, **src):
    """Export a generator (ONNX, fp16 ONNX, AOTInductor, TensorRT, OpenVINO, Triton repository, safetensors);
    prove parity."""
    import os
    from gantk.export.parity import load_photos, load_quality
    from gantk.export.pipeline import check_request, run_export, verify_export
    from gantk.export.spec import load_spec
    if verify:
        manifest = verify_export(verify, load_photos(parity_images) if parity_images else None, log=click.echo)
        click.echo(f"verified {verify}: {len(manifest['files'])} files, parity passed")
        return
    fmts = [f.strip() for f in formats.split(",") if f.strip()]
    sizes = _sizes(parity_sizes, "--parity_sizes") if parity_sizes else None
    check_request(out, fmts, sizes, max_batch, opt_size, max_size)  # before loading anything
    quality = load_quality(lpips_net, lpips_weights, lpips_backbone, eval_images, inception_weights, quality_gate,
                           sizes or [], device, log=click.echo)
    spec, label = load_spec(**src)
    m = spec.multiple
    absolute = {k: os.path.abspath(v) if v and k in ("weights", "checkpoints_dir") else v for k, v in src.items()}
    source = {"generator": absolute, "parity_images": parity_images and os.path.abspath(parity_images)}
    out = out or f"./exports/{label}"
    manifest = run_export(spec, out, fmts, load_photos(parity_images), sizes or [max(64, 2 * m), max(128, 4 * m)],
                          opset=opset, max_batch=max_batch, opt_size=opt_size, max_size=max_size, device=device,
                          name=label, source=source, log=click.echo, quality=quality)
    click.echo(f"parity passed; wrote {', '.join(manifest['artifacts'].values())} in {out}")


@cli.command("bench")
@generator_source
@click.option("--backends", default=None, help="comma-separated: eager; aoti, ort-cpu, ort-cuda, ort-trt, "
              "openvino-cpu, trt-fp32, trt-fp16; or options of the PyTorch model joined by '+', from amp (fp16 on "
              "CUDA, bf16 on CPU), amp-bf16, "
              "channels_last, triton, winograd, compile, compile-max-autotune, e.g. amp+compile+triton "
              "(default: a list for --device; unavailable ones are listed with the reason)")
@click.option("--batches", default="1", show_default=True, help="batch sizes, comma-separated")
@click.option("--sizes", default="256", show_default=True, help="image sizes (square), px, comma-separated")
@click.option("--warmup", type=int, default=2, show_default=True)
@click.option("--repeats", type=int, default=10, show_default=True)
@click.option("--threads", type=int, default=0, help="CPU threads for torch and ONNX Runtime (0: torch's default)")
@click.option("--budget_s", type=float, default=0.0, help="per backend and shape: fewer runs (at least 1) when a "
              "call is slower than this budget allows (0: always --warmup/--repeats)")
@click.option("--interleave", is_flag=True, help="build every backend first, then per batch/size call each "
              "backend once per timed round, so a host whose speed drifts skews no ratio (speed-up: the median "
              "of the rounds' paired ratios)")
@click.option("--isolate", is_flag=True, help="run every backend/batch/size row in a freshly spawned process, so "
              "its peak memory is that configuration's alone and no backend's process settings (winograd's "
              "malloc) reach another's rows")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda or auto")
@click.option("--images", "image_source", type=click.Path(exists=True),
              help="real images to run (default: scikit-image's sample photos)")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="results path without suffix (writes .json, .md, .png; default ./bench/<model>_<device>)")
@_QUALITY
def bench_cmd(backends, batches, sizes, warmup, repeats, threads, budget_s, interleave, isolate, device, image_source,
              out, lpips_net, lpips_weights, lpips_backbone, eval_images, inception_weights, **src):
    """Latency, throughput, memory and parity of a generator on every backend."""
    from gantk.bench import BACKENDS, CPU_DEFAULT, check_backend, check_modes, run_bench, write_results
    from gantk.export.parity import load_photos, load_quality
    from gantk.export.spec import load_spec
    from gantk.runtime import resolve_device
    from gantk.io import check_writable
    dev = resolve_device(device)
    names = [b.strip() for b in backends.split(",")] if backends else list(BACKENDS if dev.type == "cuda" else CPU_DEFAULT)
    for name in names:
        check_backend(name)
    batch_list, size_list = _sizes(batches, "--batches"), _sizes(sizes, "--sizes")
    check_modes(interleave, isolate)
    for option, value, low in (("--warmup", warmup, 0), ("--repeats", repeats, 1), ("--threads", threads, 0),
                               ("--budget_s", budget_s, 0)):
        if value < low:
            raise GantkError(f"{option} must be >= {low}, got {value}")
    if out:
        check_writable(Path(out).with_suffix(".json"), "--out")
    quality = load_quality(lpips_net, lpips_weights, lpips_backbone, eval_images, inception_weights,
                           sizes=size_list, device=dev, log=click.echo, outputs=sum(batch_list) * len(size_list))
    spec, label = load_spec(**src)
    out = out or f"./bench/{label}_{dev.type}"
    check_writable(Path(out).with_suffix(".json"), "--out")
    doc = run_bench(spec, names, batch_list, size_list, load_photos(image_source), str(dev), warmup,
                    repeats, threads, budget_s, log=click.echo, quality=quality, interleave=interleave,
                    isolate=isolate)
    doc["config"]["command"] = _command_line(click.get_current_context())
    for path in write_results(doc, out):
        click.echo(f"wrote {path}")


@cli.command("serve")
@generator_source
@click.option("--export", "export_dir", type=click.Path(file_okay=False), default=None,
              help="serve an artifact of this `gantk export` folder (instead of --name/--weights in PyTorch)")
@click.option("--artifact", default=None, help="which of the folder's formats to run (default: trt-fp16, trt, onnx, "
              "aoti, openvino, safetensors: the first it holds that can run here)")
@click.option("--model_name", default=None, help="Triton model name (default: the export's or generator's name)")
@click.option("--host", default="127.0.0.1", show_default=True, help="IP address to listen on")
@click.option("--http_port", type=int, default=8000, show_default=True)
@click.option("--grpc_port", type=int, default=8001, show_default=True)
@click.option("--metrics_port", type=int, default=8002, show_default=True)
@click.option("--max_batch", type=int, default=8, show_default=True, help="largest batch the dynamic batcher forms")
@click.option("--delay_us", type=int, default=100, show_default=True, help="dynamic batching queue delay, µs")
@click.option("--device", default="cpu", show_default=True, help="where the model runs: cpu or cuda")
def serve_cmd(export_dir, artifact, model_name, host, http_port, grpc_port, metrics_port, max_batch, delay_us, device,
              **src):
    """Serve a generator as a Triton Inference Server endpoint (HTTP + gRPC, PyTriton) until interrupted."""
    from gantk.serve import check_address, check_pytriton, open_export, serve
    check_pytriton()
    check_address(host, {"--http_port": http_port, "--grpc_port": grpc_port, "--metrics_port": metrics_port})
    if export_dir:
        runner, metadata, fmt = open_export(export_dir, artifact, device)
        label = Path(export_dir).resolve().name
        click.echo(f"{export_dir}: serving its {fmt} artifact ({runner.path.name})")
    else:
        from gantk.export.runners import eager_runner
        from gantk.export.spec import load_spec
        spec, label = load_spec(**src)
        runner, metadata = eager_runner(spec, label, device), spec.metadata()
    serve(runner, metadata, model_name or label, host, http_port, grpc_port, metrics_port, max_batch, delay_us,
          log=click.echo)


@cli.command("eval")
@click.option("--results", type=click.Path(), help="folder of translated images (translate's images/)")
@click.option("--name", default=None, help="instead of --results: translate this experiment's --dataroot "
              "<phase> split, then score it (pix2pix: --paired; BicycleGAN: --diversity, 20 samples; CycleGAN: "
              "FID/KID against the other domain's <phase> images)")
@click.option("--dataroot", type=click.Path(file_okay=False), default=None, help="with --name: the data set")
@click.option("--checkpoints_dir", default="./checkpoints", show_default=True)
@click.option("--epoch", default="latest", show_default=True, help="with --name: which saved epoch")
@click.option("--direction", type=click.Choice(DIRECTIONS), default="AtoB", show_default=True)
@click.option("--phase", default="test", show_default=True)
@click.option("--reference", type=click.Path(), default=None, help="folder of reference images (paired: matched by "
              "file name; default with --paired: the <stem>_target images beside <stem>_fake in --results)")
@click.option("--paired", is_flag=True, help="PSNR, SSIM, MAE (+ LPIPS) per matched pair; without it FID and KID")
@click.option("--diversity", is_flag=True, help="BicycleGAN samples (<stem>_random_sampleNN): LPIPS over consecutive "
              "samples per input (the BicycleGAN README's protocol) and translate's L1")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="JSON record [default: <results>/eval.json]")
@click.option("--inception-weights", "inception_weights", default=None,
              help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth for FID/KID (default: $GANTK_INCEPTION)")
@click.option("--fid-resize", "fid_resize", type=click.Choice(["clean", "legacy-pytorch"]), default="clean",
              show_default=True, help="images to 299 px: clean-fid's PIL bicubic (clean) or pytorch-fid's bilinear")
@click.option("--fid-backend", "fid_backend", type=click.Choice(FID_BACKENDS), default="auto",
              show_default=True, help="runs the Inception (auto: OpenVINO on CPU when installed, else torch)")
@click.option("--cache-dir", "cache_dir", type=click.Path(file_okay=False), default=None,
              help="FID feature cache [default: ~/.cache/gantk/fid]")
@click.option("--no-cache", "no_cache", is_flag=True, help="neither read nor write cached FID features")
@_with(_LPIPS)
@click.option("--batch-size", "batch_size", type=int, default=32, show_default=True, help="images per Inception batch")
@click.option("--kid-subsets", "kid_subsets", type=int, default=100, show_default=True)
@click.option("--kid-subset-size", "kid_subset_size", type=int, default=1000, show_default=True,
              help="lowered to the smaller set's image count")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the KID subsets")
@click.option("--device", default="auto", show_default=True)
@click.option("--baseline", is_flag=True, help="--paired on translate's folder: also score each input (<stem>_real) "
              "against its target, the identity baseline a translation should beat")
def eval_cmd(**o):
    """Score translated images: PSNR/SSIM/MAE/LPIPS against paired references, FID/KID against a reference set,
    or the LPIPS diversity of BicycleGAN samples."""
    from gantk.evaluate import format_table, run_eval
    experiment = {k: o.pop(k) for k in ("name", "dataroot", "checkpoints_dir", "epoch", "direction", "phase")}
    if experiment["name"]:
        o.update(_translate_for_eval(o, **experiment))
    elif not o["results"]:
        raise GantkError("give --results DIR (translated images) or --name NAME --dataroot DIR (an experiment)")
    doc, out = run_eval(**o, log=lambda msg: click.echo(msg, err=True))  # progress and notes
    click.echo(format_table(doc))
    click.echo(f"wrote {out}")


def _translate_for_eval(o: dict, name, dataroot, checkpoints_dir, epoch, direction, phase) -> dict:
    """`gantk eval --name`: translate the experiment's <phase> split into results/<name>/eval_<epoch>, and the
    run_eval options that score it the way its family is scored."""
    from gantk.models import load
    from gantk.translate import dataroot_folder, run_translate
    if o["results"] or o["reference"] or o["paired"] or o["diversity"]:
        raise GantkError("--name translates and scores the experiment itself: drop --results, --reference, "
                         "--paired and --diversity")
    if not dataroot or not Path(dataroot).is_dir():
        raise GantkError(f"--name needs --dataroot: the data set folder{f' ({dataroot} is none)' if dataroot else ''}")
    family = load(name, checkpoints_dir, epoch, direction).family
    if family.inference == "none":
        raise GantkError(f"--name {name}: {family.name} has no image-to-image inference to score")
    (src, dst), root = ("A", "B") if direction == "AtoB" else ("B", "A"), Path(dataroot)
    folder, paired = dataroot_folder(dataroot, phase, direction)  # what translate reads
    unpaired = folder != root and not paired
    if family.inference != "sample" and not (paired or unpaired and (root / f"{phase}{dst}").is_dir()):
        raise GantkError(f"--dataroot {dataroot}: neither {phase}/ (A|B pairs) nor {phase}{src}/ and {phase}{dst}/")
    out = run_translate(name=name, checkpoints_dir=checkpoints_dir, epoch=epoch, direction=direction,
                        dataroot=dataroot, phase=phase, num_test=-1, device=o["device"],
                        output=str(Path("results") / name / f"eval_{epoch}"),
                        **({"n_samples": 20} if family.inference == "sample" else {}))
    images = str(out / "images")
    if family.inference == "sample":
        return {"results": images, "diversity": True}
    return {"results": images, "reference": str(root / f"{phase}{dst}")} if unpaired else \
        {"results": images, "paired": True}


def _one_line(e: Exception) -> str:
    """The user-facing line of an error, also when it was re-raised from a DataLoader worker."""
    msg = str(e).strip()
    if "Original Traceback" in msg:
        msg = re.sub(r"^[\w.]+(Error|Exception): ", "", msg.splitlines()[-1])
    return msg.splitlines()[0] if msg else type(e).__name__


def main(argv: list[str] | None = None) -> int:
    try:
        rv = cli.main(args=argv, prog_name="gantk", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except GantkError as e:
        rank = f"[rank {os.environ['RANK']}] " if int(os.environ.get("WORLD_SIZE", 1)) > 1 else ""
        click.echo(f"gantk: error: {rank}{_one_line(e)}", err=True)
        return 2
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:  # a bad or missing option: one line too, like every other error
        click.echo(f"gantk: error: {' '.join(e.format_message().split())} (see --help)", err=True)
        return e.exit_code
    except (click.Abort, KeyboardInterrupt):
        click.echo("gantk: interrupted", err=True)
        return 130


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
