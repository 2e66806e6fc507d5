"""The model head as an ONNX graph: stored features in, posteriors out (optional 'onnx' extra).

    head = ScoreHead(model, nsteps=3)                  # torch: feats [B, T, L, D], lengths [B] -> [B, K]
    export_head(model, "head_nsteps3.onnx", nsteps=3)  # the same computation as a fixed graph
    session = OnnxHead("head_nsteps3.onnx")
    scores = session(feats, lengths)                   # numpy [B, K], as model.predict(...)["scores"]

The inputs are what stage 1 stores and genser-infer feeds the model (``features.from_matrix``):
``feats`` float32 [B, T, L, D] (T = 1 for pooled dumps) and ``lengths`` int64 [B]. The frontend
is not part of the graph. Gen-SER's sampler is unrolled into N denoiser calls on the fixed time
grid with the deterministic sampler (eta = 0), so the graph has no loop and no random draw; a
model whose path starts from noise (schedule std(1) > 0) would need one and is refused.
"""
import os

import numpy as np
import torch
from torch import nn

# Input and output names of the graph (recorded in the model card).
INPUTS = ("feats", "lengths")
OUTPUT = "scores"
OPSET = 17


class ExportError(ValueError):
    """A model (or an environment) that cannot be exported as asked; the message says what is missing."""


def _onnx_modules():
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError:
        raise ExportError("ONNX export needs the 'onnx' extra: pip install -c tools/constraints.txt "
                          "'genser[onnx]' (tools/install.sh installs it)") from None
    return onnxruntime


class ScoreHead(nn.Module):
    """``model.predict(feats, lengths, nsteps, eta=0)["scores"]`` as a module with tensor inputs only."""

    def __init__(self, model, nsteps=1):
        super().__init__()
        if model.kind == "genser":
            if int(nsteps) != nsteps or nsteps < 1:
                raise ExportError(f"Gen-SER is exported at a fixed number of sampler steps >= 1, got {nsteps}")
            if model.schedule.std(1.0) > 0:
                raise ExportError(f"the schedule {model.config['schedule']} starts from noise (std(1) = "
                                  f"{model.schedule.std(1.0):g}): the sampler draws at t=1 even at eta=0, and a "
                                  f"fixed ONNX graph cannot; export a bridge schedule (std(1) = 0)")
        self.model = model
        self.nsteps = int(nsteps) if model.kind == "genser" else None
        # the wrapper too: torch.onnx.export restores the mode it found on the module it is given,
        # and a wrapper left in training mode would switch the model back to it (dropout on)
        self.eval()

    def forward(self, feats, lengths):
        # infer, not predict: predict toggles train/eval mode, which the tracer need not see
        return self.model.infer(feats, lengths, self.nsteps, 0.0, None)["scores"]


def example_inputs(model, batch=2, frames=3):
    """Trace inputs with more than one frame and unequal lengths, so that no shape of the real
    inputs is baked into the graph as a constant."""
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(batch, frames, model.num_layers, model.input_dim, generator=gen)
    lengths = torch.arange(frames, frames - batch, -1).clamp_min(1).to(torch.long)
    return feats, lengths


@torch.no_grad()
def export_head(model, path, nsteps=1):
    """Writes the ONNX graph of ``ScoreHead(model, nsteps)`` to ``path`` (a temp name, then renamed).

    Batch and frame axes are dynamic. Uses torch's TorchScript-based exporter, which needs only
    the ``onnx`` package (the newer exporter would add onnxscript)."""
    import tempfile
    import warnings

    _onnx_modules()
    head = ScoreHead(model, nsteps)
    feats, lengths = example_inputs(model)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp.", suffix=".onnx", dir=folder)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            # the tracer warns about every Python-side check on shapes; they hold for any input
            warnings.simplefilter("ignore")
            torch.onnx.export(head, (feats, lengths), tmp, input_names=list(INPUTS), output_names=[OUTPUT],
                              dynamic_axes={"feats": {0: "batch", 1: "frames"}, "lengths": {0: "batch"},
                                            OUTPUT: {0: "batch"}},
                              opset_version=OPSET, dynamo=False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return head


class OnnxHead:
    """An exported head run by ONNX Runtime on the CPU: ``head(feats, lengths) -> scores`` (numpy).

    A graph inside a genser-export folder is checked against the sha256 its export.yaml records
    first (a changed file is refused, naming it), and every answer is checked finite: a graph
    with a corrupted weight must not hand out posteriors. ``num_layers`` and ``dim`` are the
    sizes the graph's ``feats`` input takes ([batch, frames, num_layers, dim]).
    """

    def __init__(self, path, threads=1):
        from genser.export import export_folder_of, verify_export

        ort = _onnx_modules()
        self.path = str(path)
        folder = export_folder_of(path)
        if folder is not None:
            verify_export(folder, [os.path.relpath(path, folder)])
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(self.path, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 -- onnxruntime's errors do not name the file
            raise ExportError(f"{path}: ONNX Runtime cannot load it: {' '.join(str(exc).split())[:300]}") from None
        shape = next(i for i in self.session.get_inputs() if i.name == "feats").shape
        self.num_layers, self.dim = shape[2], shape[3]

    def __call__(self, feats, lengths):
        feats = np.ascontiguousarray(np.asarray(feats, dtype=np.float32))
        lengths = np.ascontiguousarray(np.asarray(lengths, dtype=np.int64))
        scores = self.session.run([OUTPUT], {"feats": feats, "lengths": lengths})[0]
        if not np.isfinite(scores).all():
            raise ExportError(f"{self.path}: the graph gave non-finite scores (NaN or inf); its weights are "
                              f"corrupted, or the input is")
        return scores


def max_difference(model, onnx_path, feats, lengths, nsteps=1):
    """Largest |ONNX Runtime - torch| over the scores of ``feats``/``lengths`` (torch tensors)."""
    with torch.no_grad():
        torch_scores = ScoreHead(model, nsteps)(feats, lengths).numpy()
    onnx_scores = OnnxHead(onnx_path)(feats.numpy(), lengths.numpy())
    if onnx_scores.shape != torch_scores.shape:
        raise ExportError(f"{onnx_path}: ONNX Runtime gave scores {onnx_scores.shape}, torch {torch_scores.shape}")
    return float(np.abs(onnx_scores - torch_scores).max())
