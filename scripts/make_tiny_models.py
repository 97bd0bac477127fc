#!/usr/bin/env python3
"""Tiny ONNX models for the infer stage's tests (tests/it/infer_models.rs), built with the
`onnx` package (pip install onnx), opset 13, a few hundred bytes each:

  counter.onnx   x [1, 512], s [1] -> y [1, 1] = s, s' = s + 1   (state carried, reset per item)
  nan.onnx       x [1, 512] -> y [1, 1] = sqrt(-1 - |mean(x)|)    (always NaN)
  narrow.onnx    x [1, 100] -> y [1, 1] = mean(x)                 (a shape the config won't feed)
  mean.onnx      x [1, 512] -> y [1, 1] = mean(x)                 (values checked against the PCM)
  stats.onnx     x [1, 512] -> y [1, 3] = [mean, max, min](x)     (embedding and labels outputs)
  batch_mean.onnx x [N, 512] -> y [N, 1] = mean(x) per row        (batches of chunks, any N)
  axis1_mean.onnx x [N, A, B] -> y [N, B] = mean over axis 1      (feature inputs, both layouts)

    python scripts/make_tiny_models.py
"""
import pathlib

import onnx
from onnx import TensorProto, helper

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "models"


def save(name, nodes, inputs, outputs, inits=()):
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="klio-edge tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, OUT / f"{name}.onnx")


def f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    shape11 = helper.make_tensor("shape11", TensorProto.INT64, [2], [1, 1])
    save("counter",
         [helper.make_node("Reshape", ["s", "shape11"], ["y"]),
          helper.make_node("Add", ["s", "one"], ["s_next"])],
         [f32("x", [1, 512]), f32("s", [1])], [f32("y", [1, 1]), f32("s_next", [1])],
         [one, shape11])
    save("nan",
         [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=1),
          helper.make_node("Abs", ["m"], ["a"]),
          helper.make_node("Add", ["a", "one"], ["b"]),
          helper.make_node("Neg", ["b"], ["c"]),
          helper.make_node("Sqrt", ["c"], ["y"])],
         [f32("x", [1, 512])], [f32("y", [1, 1])], [one])
    save("narrow", [helper.make_node("ReduceMean", ["x"], ["y"], axes=[1], keepdims=1)],
         [f32("x", [1, 100])], [f32("y", [1, 1])])
    save("mean", [helper.make_node("ReduceMean", ["x"], ["y"], axes=[1], keepdims=1)],
         [f32("x", [1, 512])], [f32("y", [1, 1])])
    save("stats",
         [helper.make_node("ReduceMean", ["x"], ["a"], axes=[1], keepdims=1),
          helper.make_node("ReduceMax", ["x"], ["b"], axes=[1], keepdims=1),
          helper.make_node("ReduceMin", ["x"], ["c"], axes=[1], keepdims=1),
          helper.make_node("Concat", ["a", "b", "c"], ["y"], axis=1)],
         [f32("x", [1, 512])], [f32("y", [1, 3])])
    save("batch_mean", [helper.make_node("ReduceMean", ["x"], ["y"], axes=[1], keepdims=1)],
         [f32("x", ["N", 512])], [f32("y", ["N", 1])])
    save("axis1_mean", [helper.make_node("ReduceMean", ["x"], ["y"], axes=[1], keepdims=0)],
         [f32("x", ["N", "A", "B"])], [f32("y", ["N", "B"])])
    for f in sorted(OUT.glob("*.onnx")):
        print(f.name, f.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
