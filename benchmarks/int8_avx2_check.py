"""AVX2-only numerics of campplus-int8 (run under `qemu-x86_64 -cpu Haswell`): cosine INT8 vs FP32 on
precomputed features (ONNX Runtime only, so it finishes under emulation). Usage: python int8_avx2_check.py FEATS.npy

Superseded: the emulation did not reproduce the int16 saturation of ONNX Runtime's U8S8 kernels that a
real AVX2-only CPU showed (min cosine 0.98 with 8-bit weights; BENCHMARKS.md "INT8 CAM++", "Per CPU
kind"). Measure on the machine itself with bench_int8.py; this script is kept for the record of
results/int8_avx2_numerics.json."""
import sys, json, numpy as np, onnxruntime as ort
f = np.load(sys.argv[1] if len(sys.argv) > 1 else "/tmp/int8/q_feats.npy")
def s(p):
    so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.log_severity_level = 3
    return ort.InferenceSession(p, so, providers=["CPUExecutionProvider"])
a = s("/root/.cache/speakerid/models/campplus/model.onnx"); b = s("/root/.cache/speakerid/models/campplus-int8/model.onnx")
out = []
for x in f:
    u = a.run(None, {"feats": x[None]})[0][0]; v = b.run(None, {"feats": x[None]})[0][0]
    out.append(float(u @ v / np.linalg.norm(u) / np.linalg.norm(v)))
print(json.dumps({"cosines": out, "int8_out_first": v[:4].tolist()}))
