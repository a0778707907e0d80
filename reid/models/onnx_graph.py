"""An ONNX ReID graph as a trainable torch module, so a deployed ONNX model can be fine-tuned.

Users often hold a ReID model only as ONNX (torchreid / BoxMOT exports such as
``osnet_x0_25_msmt17.onnx``). :class:`OnnxGraphModule` runs such a graph with torch operations:
every float initializer becomes an ``nn.Parameter`` (int64 ones, such as reshape targets, stay
constant buffers), ``BatchNormalization`` nodes train like ``nn.BatchNorm`` (batch statistics in
train mode, running statistics updated), so the whole graph takes gradients. Exports of trained
models usually have their convolution BatchNorms folded into the convolutions; those layers then
train as convolutions with a bias (like a frozen-BatchNorm fine-tune).

The graph's structure (the ONNX model without its weights) is kept in the ``graph`` buffer, a
uint8 tensor, so a state dict alone rebuilds the module (:meth:`OnnxGraphModule.from_state_dict`).
State-dict names are the initializer names with ``.`` replaced by ``:``: trained weights under
``params.``, BatchNorm running statistics as ``running:NAME``, integer constants as ``const:NAME``.

Supported operators (the ones ReID CNN exports use): Conv, Relu, Sigmoid, Clip, Add, Sub, Mul,
Div, Concat, MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, ReduceMean,
BatchNormalization, Gemm, MatMul, Flatten, Reshape, Shape, Gather, Unsqueeze, Squeeze, Cast,
Constant, Identity. Anything else is
refused when the module is built, naming the operator.

Input: the graph's single input, ``(N, 3, H, W)`` float32; output: its first output, e.g.
``(N, 512)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from reid.errors import CrosscamError

_SIMPLE = {
    "Relu": F.relu,
    "Sigmoid": torch.sigmoid,
    "Identity": lambda x: x,
    "Add": torch.add,
    "Sub": torch.sub,
    "Mul": torch.mul,
    "Div": torch.div,
    "MatMul": torch.matmul,
}
SUPPORTED_OPS = frozenset(_SIMPLE) | {
    "Conv", "Clip", "Concat", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "BatchNormalization",
    "Gemm", "Flatten", "Reshape", "Shape", "Gather", "Unsqueeze", "Squeeze", "Constant", "ReduceMean", "Cast",
}


class OnnxGraphModule(nn.Module):
    """Interpret an ONNX graph with torch ops; see the module docstring.

    >>> module = OnnxGraphModule.from_file("../shared/weights/osnet_x0_25_msmt17.onnx")  # doctest: +SKIP
    >>> module(torch.zeros(2, 3, 256, 128)).shape  # doctest: +SKIP
    torch.Size([2, 512])
    """

    def __init__(self, model: onnx.ModelProto, source: str = "ONNX model"):
        super().__init__()
        graph = model.graph
        unsupported = sorted({node.op_type for node in graph.node} - SUPPORTED_OPS)
        if unsupported:
            raise CrosscamError(
                f"{source}: operators {', '.join(unsupported)} cannot be fine-tuned by crosscam "
                f"(supported: {', '.join(sorted(SUPPORTED_OPS))}); train a supported backbone instead"
            )
        initializer_names = {init.name for init in graph.initializer}
        inputs = [value.name for value in graph.input if value.name not in initializer_names]
        if len(inputs) != 1:
            raise CrosscamError(f"{source}: has {len(inputs)} image inputs; fine-tuning needs exactly one")
        self.input_name = inputs[0]
        self.output_name = graph.output[0].name
        self.params = nn.ParameterDict()
        running = {node.input[i] for node in graph.node if node.op_type == "BatchNormalization" for i in (3, 4)}
        self._buffer_names: dict[str, str] = {}  # initializer name -> buffer attribute
        for init in graph.initializer:
            array = numpy_helper.to_array(init)
            if array.dtype.kind == "f" and init.name not in running:
                self.params[_flat(init.name)] = nn.Parameter(torch.from_numpy(array.astype(np.float32)))
            else:  # running statistics are state, integer shapes are constants: neither is trained
                self._buffer_names[init.name] = ("running:" if init.name in running else "const:") + _flat(init.name)
                self.register_buffer(self._buffer_names[init.name], torch.from_numpy(array.copy()))
        self.nodes = [(node.op_type, list(node.input), list(node.output), _attributes(node)) for node in graph.node]
        structure = onnx.ModelProto()
        structure.CopyFrom(model)
        del structure.graph.initializer[:]
        self.register_buffer("graph", torch.frombuffer(bytearray(structure.SerializeToString()), dtype=torch.uint8))

    @classmethod
    def from_file(cls, path: str | Path) -> "OnnxGraphModule":
        path = Path(path)
        if not path.is_file():
            raise CrosscamError(f"{path}: no such ONNX file; pass the path of the ReID model to fine-tune")
        try:
            model = onnx.load(str(path))
        except Exception as exc:  # onnx raises DecodeError and others for a non-ONNX file
            raise CrosscamError(f"{path}: not a readable ONNX model ({type(exc).__name__}); pass a .onnx ReID model") from None
        return cls(model, str(path))

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], prefix: str = "", source: str = "checkpoint") -> "OnnxGraphModule":
        """The module whose structure is ``state[prefix + "graph"]`` (weights still to be loaded)."""
        model = onnx.ModelProto()
        model.ParseFromString(state[prefix + "graph"].numpy().tobytes())
        for key, value in state.items():
            name = _initializer_name(key[len(prefix):]) if key.startswith(prefix) else None
            if name is not None:
                model.graph.initializer.append(numpy_helper.from_array(value.detach().cpu().numpy(), name))
        return cls(model, source)

    @property
    def output_dim(self) -> int:
        """Width of the output feature, from a forward pass at the graph's declared input size."""
        height, width = self.input_size
        with torch.no_grad():
            was_training = self.training
            out = self.eval()(torch.zeros(1, 3, height, width))
            self.train(was_training)
        return int(out.shape[1])

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) declared by the graph's input (static dims required)."""
        model = onnx.ModelProto()
        model.ParseFromString(self.graph.numpy().tobytes())
        dims = next(v for v in model.graph.input if v.name == self.input_name).type.tensor_type.shape.dim
        return int(dims[2].dim_value), int(dims[3].dim_value)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {self.input_name: images}
        for op, inputs, outputs, attrs in self.nodes:
            args = [self._value(name, values) for name in inputs]
            values[outputs[0]] = self._run(op, args, inputs, attrs)
        return values[self.output_name]

    def _value(self, name: str, values: dict[str, torch.Tensor]) -> torch.Tensor | None:
        if name == "":
            return None
        if name in values:
            return values[name]
        if name in self._buffer_names:
            return getattr(self, self._buffer_names[name])
        return self.params[_flat(name)]

    def _run(self, op: str, args: list, inputs: list[str], attrs: dict) -> torch.Tensor:
        if op in _SIMPLE:
            return _SIMPLE[op](*args)
        if op == "Conv":
            pads = attrs.get("pads", [0, 0, 0, 0])
            x = args[0]
            if pads[:2] != pads[2:]:
                x, pads = F.pad(x, (pads[1], pads[3], pads[0], pads[2])), [0, 0, 0, 0]
            return F.conv2d(x, args[1], args[2] if len(args) > 2 else None, attrs.get("strides", 1), pads[:2],
                            attrs.get("dilations", 1), attrs.get("group", 1))
        if op == "BatchNormalization":
            x, weight, bias, mean, var = args
            momentum = 1.0 - attrs.get("momentum", 0.9)  # ONNX keeps `momentum` of the old value
            return F.batch_norm(x, mean, var, weight, bias, self.training, momentum, attrs.get("epsilon", 1e-5))
        if op in ("MaxPool", "AveragePool"):
            pads = attrs.get("pads", [0, 0, 0, 0])
            if pads[:2] != pads[2:]:
                raise CrosscamError(f"{op} with asymmetric padding {pads} is not supported for fine-tuning")
            kwargs = {"kernel_size": attrs["kernel_shape"], "stride": attrs.get("strides", 1), "padding": pads[:2],
                      "ceil_mode": bool(attrs.get("ceil_mode", 0))}
            if op == "MaxPool":
                return F.max_pool2d(args[0], **kwargs)
            return F.avg_pool2d(args[0], count_include_pad=bool(attrs.get("count_include_pad", 0)), **kwargs)
        if op == "GlobalAveragePool":
            return args[0].mean(dim=(2, 3), keepdim=True)
        if op == "GlobalMaxPool":
            return args[0].amax(dim=(2, 3), keepdim=True)
        if op == "ReduceMean":
            axes = attrs.get("axes") or ([int(v) for v in args[1]] if len(args) > 1 and args[1] is not None else None)
            keep = bool(attrs.get("keepdims", 1))
            return args[0].mean(dim=tuple(axes), keepdim=keep) if axes else args[0].mean()
        if op == "Cast":
            dtype = torch.from_numpy(np.empty(0, onnx.helper.tensor_dtype_to_np_dtype(attrs["to"]))).dtype
            return args[0].to(dtype)
        if op == "Clip":
            low = args[1] if len(args) > 1 and args[1] is not None else attrs.get("min")
            high = args[2] if len(args) > 2 and args[2] is not None else attrs.get("max")
            return torch.clamp(args[0], low, high)
        if op == "Gemm":
            a, b = args[0], args[1]
            a = a.t() if attrs.get("transA", 0) else a
            b = b.t() if attrs.get("transB", 0) else b
            out = attrs.get("alpha", 1.0) * (a @ b)
            return out + attrs.get("beta", 1.0) * args[2] if len(args) > 2 and args[2] is not None else out
        if op == "Flatten":
            return torch.flatten(args[0], start_dim=attrs.get("axis", 1))
        if op == "Reshape":
            return _reshape(args[0], [int(v) for v in args[1]])
        if op == "Shape":
            return torch.tensor(args[0].shape, dtype=torch.int64, device=args[0].device)  # beside the graph's int constants
        if op == "Gather":
            data, indices, axis = args[0], args[1], attrs.get("axis", 0) % args[0].dim()
            picked = torch.index_select(data, axis, indices.reshape(-1))
            return picked.reshape((*data.shape[:axis], *indices.shape, *data.shape[axis + 1 :]))
        if op == "Unsqueeze":
            out = args[0]
            for axis in sorted(attrs["axes"] if "axes" in attrs else [int(v) for v in args[1]]):
                out = out.unsqueeze(axis)
            return out
        if op == "Squeeze":
            axes = attrs.get("axes") or ([int(v) for v in args[1]] if len(args) > 1 else None)
            return args[0].squeeze(tuple(axes)) if axes else args[0].squeeze()
        if op == "Concat":
            return torch.cat(args, dim=attrs.get("axis", 0))
        if op == "Constant":
            return torch.from_numpy(numpy_helper.to_array(attrs["value"]).copy()).to(self.graph.device)
        raise AssertionError(op)  # unreachable: SUPPORTED_OPS is checked at construction


def _attributes(node: onnx.NodeProto) -> dict:
    return {attr.name: onnx.helper.get_attribute_value(attr) for attr in node.attribute}


def _flat(initializer_name: str) -> str:
    return initializer_name.replace(".", ":")


def _initializer_name(state_key: str) -> str | None:
    """The ONNX initializer behind a state-dict key of the module (None for the ``graph`` buffer)."""
    for prefix in ("params.", "running:", "const:"):
        if state_key.startswith(prefix):
            return state_key[len(prefix):].replace(":", ".")
    return None


def _reshape(x: torch.Tensor, shape: list[int]) -> torch.Tensor:
    """ONNX Reshape (0 copies a dimension), keeping the batch dimension symbolic.

    Export graphs compute their reshape targets from the input's shape, so the target's first
    entry is the batch size of this call; writing it as -1 keeps a traced re-export batch-agnostic.
    """
    shape = [x.shape[i] if v == 0 else v for i, v in enumerate(shape)]
    if shape and shape[0] == x.shape[0]:
        rest = shape[1:]
        if -1 in rest:
            known = int(np.prod([v for v in rest if v != -1]))
            rest[rest.index(-1)] = int(np.prod(x.shape[1:])) // known
        return x.reshape(-1, *rest)
    return x.reshape(shape)


class OnnxTrunk(nn.Module):
    """An ONNX ReID graph as the trunk of a :class:`~reid.models.bot.BnneckReidModel`.

    The BoT model hands its trunk ImageNet-normalised RGB; the graph expects what its model card
    says, so the trunk first maps one to the other: a channel ``order`` (index tensor, (3,)), then
    per-channel ``scale`` and ``shift`` ((1, 3, 1, 1) each; identity for an ImageNet RGB card).
    A graph that returns ``(N, D)`` vectors gives ``(N, D, 1, 1)`` maps, so pooling is a no-op.
    """

    def __init__(self, graph: OnnxGraphModule, order: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        self.graph_module = graph
        self.register_buffer("order", order.to(torch.int64))
        self.register_buffer("scale", scale.float().reshape(1, 3, 1, 1))
        self.register_buffer("shift", shift.float().reshape(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.graph_module(images.index_select(1, self.order) * self.scale + self.shift)
        return out.reshape(*out.shape, 1, 1) if out.dim() == 2 else out
