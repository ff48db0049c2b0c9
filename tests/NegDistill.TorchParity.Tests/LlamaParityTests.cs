// Whole-model parity with TorchSharp: the engine's LlamaModel (src/NegDistill.Core/Model/LlamaModel.cs,
// Adapters.cs, the Ops/ it calls) against benchmarks/NegDistill.TorchReference/TorchLlama.cs, worker cases
// llama-step (full fine-tuning), lora-step (LoRA on all seven projections, base frozen) and decode (the
// KV-cache path, LlamaModel.Rows.cs, against TorchLlama.Prefill/DecodeStep: the logits of a prefill and
// of each following single-token step).
// Weights go to the worker through the engine's own writers (ModelIO.SaveBase: config.json +
// model.safetensors; ModelIO.SaveLora: PEFT adapter folder), the batch through SafeTensors.Write.
//
// Tolerances (normwise relative error per tensor, max|engine − torch| / max|torch|, see Comparer):
//   fp64 engine (CpuBackend<double>) vs torch float64: 1e-10. Both sides compute in double from the same
//     fp32-representable weights, and both build the RoPE tables in fp32 the way transformers does, so
//     only summation order differs (observed 2e-15 to 3e-14). A wrong sign, a missing term or a
//     wrong scale shows as 1e-3 or more: 1e-10 leaves several orders of margin on both sides.
//   fp32 engine (CpuBackend, the fast path: packed GEMM, SIMD ops) vs the same torch float64 outputs:
//     2e-4. Float rounding through 2 layers and the backward (observed up to 3e-6 on gradients, 7e-7 on logits).
using NegDistill.Checkpoints;
using NegDistill.Infer;
using NegDistill.Model;
using NegDistill.Runtime;

namespace NegDistill.TorchParity.Tests;

[TestFixture]
public class LlamaParityTests
{
    public const double Fp64Tol = 1e-10;
    public const double Fp32Tol = 2e-4;

    static float[] Uniform(long n, ulong seed, float scale, float offset = 0)
    {
        var r = new float[n];
        for (long i = 0; i < n; i++) r[i] = offset + (2 * CounterRng.Uniform(seed, (ulong)i) - 1) * scale;
        return r;
    }

    /// <summary>Weights large enough that attention is far from uniform and every path carries signal:
    /// matrices U(±1.5/√fan_in), LM head U(±2/√C), embedding U(±1), norm weights 1 ± 0.3 (so the
    /// weight's place in RMSNorm matters). All fp32 values: exact in fp32 storage and in double.</summary>
    static void Randomize(IBackend ops, LlamaModel m, ulong seed)
    {
        ulong k = 0;
        foreach (var p in m.BaseParameters)
        {
            k++;
            float[] v = p.Name.EndsWith("norm.weight") ? Uniform(p.Length, seed + k, 0.3f, 1f)
                : p.Name == "model.embed_tokens.weight" ? Uniform(p.Length, seed + k, 1f)
                : p.Name == "lm_head.weight" ? Uniform(p.Length, seed + k, 2f / MathF.Sqrt(p.Shape[1]))
                : Uniform(p.Length, seed + k, 1.5f / MathF.Sqrt(p.Shape[1]));
            ops.Upload(p.W, v);
        }
    }

    /// <summary>B = 3, T = 8: row 0 full, row 1 right-padded (6 real), row 2 padded on both sides (2 pads,
    /// 5 real, 1 pad), so both padding conventions (positions from the mask, queries without a visible
    /// key) are covered. Targets are the next real token, −1 on pads and on each row's last real token:
    /// 7 + 5 + 4 = 16 loss tokens. 16 on purpose: the engine passes the loss weight 1/count to its ops as
    /// a float (CrossEntropyHead, NceHead), which is exact only for a power of two; with 14 tokens the fp64
    /// oracle's gradients carry that fp32 rounding (relative ~1e-8) and the 1e-10 check would be measuring it.</summary>
    public static ModelBatch Batch(int vocab, ulong seed = 11, (int From, int To)[]? realSpans = null)
    {
        int b = 3, t = 8;
        var tok = new int[b * t]; var tgt = new int[b * t]; var mask = new float[b * t];
        var real = realSpans ?? [(0, 8), (0, 6), (2, 7)];
        for (int i = 0; i < b; i++)
            for (int j = 0; j < t; j++)
            {
                int k = i * t + j;
                bool isReal = j >= real[i].From && j < real[i].To;
                tok[k] = isReal ? (int)(CounterRng.Hash(seed, (ulong)k) % (ulong)vocab) : 0;
                mask[k] = isReal ? 1 : 0;
            }
        for (int i = 0; i < b; i++)
            for (int j = 0; j < t; j++)
                tgt[i * t + j] = j >= real[i].From && j + 1 < real[i].To ? tok[i * t + j + 1] : -1;
        return new ModelBatch(b, t, tok, tgt, mask);
    }

    static void WriteBatch(string dir, ModelBatch batch)
    {
        long[] shape = [batch.B, batch.T];
        SafeTensors.Write(Path.Combine(dir, "batch.safetensors"),
            [TorchWorker.I32("tokens", shape, batch.Tokens), TorchWorker.I32("targets", shape, batch.Targets), TorchWorker.F32("mask", shape, batch.Mask)]);
    }

    static readonly LoraConfig Lora = new()
    {
        Rank = 4, Alpha = 12, Dropout = 0f,                     // scale 3, not PEFT's usual 2, so a wrong scale shows
        Targets = [Proj.q_proj, Proj.k_proj, Proj.v_proj, Proj.o_proj, Proj.gate_proj, Proj.up_proj, Proj.down_proj],
    };

    [TestCase(false, TestName = "LlamaStep_FullFineTuning_LogitsLossEveryGradient")]
    [TestCase(true, TestName = "LoraStep_AllSevenProjections_LogitsLossLoraGradients")]
    public void Step(bool lora)
    {
        string kase = lora ? "lora-step" : "llama-step";
        string dir = TorchWorker.NewDir(kase);
        try
        {
            var cfg = LlamaConfig.Tiny;
            var batch = Batch(cfg.Vocab);

            // ---- engine, fp64 oracle: builds the weights and writes them with the engine's writers
            var ops = new CpuBackend<double>();
            using var m = new LlamaModel(ops, cfg, DType.F32, trainBase: !lora, seed: 3) { LogitsBudget = 5L * cfg.Vocab };  // loss in chunks of 5 rows
            Randomize(ops, m, 100);
            if (lora)
            {
                ulong s = 200;
                foreach (var a in m.AddLora(Lora, seed: 5))
                {
                    ops.Upload(a.A.W, Uniform(a.A.Length, s++, 1f / MathF.Sqrt(a.A.Shape[1])));
                    ops.Upload(a.B.W, Uniform(a.B.Length, s++, 0.5f));   // non-zero B: dA and the LoRA path carry signal
                }
            }
            ModelIO.SaveBase(m, dir);
            if (lora) ModelIO.SaveLora(m, Path.Combine(dir, "adapter"), Lora);
            WriteBatch(dir, batch);

            m.ForwardHidden(batch, training: false);
            int n = batch.B * batch.T;
            using var full = ops.Alloc("logits", DType.F32, n, cfg.Vocab);
            ops.MatMul(full, m.Hidden, m.LmHead.W, n, cfg.Vocab, cfg.Dim, false, true);
            var logits64 = ops.Read(full);
            double loss64 = m.Step(batch, new CrossEntropyHead(), backward: true, training: true);
            var grads64 = m.TrainableParameters.ToDictionary(p => p.Name, p => ops.Read(p.Grad!));

            // ---- engine, fp32 fast path, loading what the fp64 run wrote
            var ops32 = new CpuBackend();
            using var m32 = new LlamaModel(ops32, cfg, DType.F32, trainBase: !lora, seed: 99);
            ModelIO.LoadBase(m32, dir);
            if (lora) ModelIO.LoadLora(m32, Path.Combine(dir, "adapter"), trainable: true);
            var logits32 = m32.Logits(batch);
            double loss32 = m32.Step(batch, new CrossEntropyHead(), backward: true, training: true);
            var grads32 = m32.TrainableParameters.ToDictionary(p => p.Name, p => { var g = new float[p.Length]; ops32.Download(p.Grad!, g); return g; });

            // ---- TorchSharp
            var torch = TorchWorker.Run(kase, dir);
            Assert.That(torch["logits"].Shape, Is.EqualTo(new long[] { batch.B, batch.T, cfg.Vocab }), "torch logits shape");
            var torchGrads = torch.Keys.Where(k => k is not ("logits" or "loss")).ToHashSet();
            Assert.That(torchGrads, Is.EquivalentTo(grads64.Keys),
                lora ? "torch gives gradients to exactly the LoRA factors (none to the frozen base)" : "torch gives gradients to exactly the engine's trainable parameters");
            Assert.That(grads64.Count, Is.EqualTo(lora ? cfg.Layers * 7 * 2 : 3 + 9 * cfg.Layers), "parameter count");

            var c64 = new Comparer("fp64");
            c64.Check("logits", logits64, torch["logits"].Data, Fp64Tol);
            c64.Check("loss", [loss64], torch["loss"].Data, Fp64Tol);
            foreach (var (name, g) in grads64) c64.Check(name, g, torch[name].Data, Fp64Tol);
            var c32 = new Comparer("fp32");
            c32.Check("logits", logits32, torch["logits"].Data, Fp32Tol);
            c32.Check("loss", [loss32], torch["loss"].Data, Fp32Tol);
            foreach (var (name, g) in grads32) c32.Check(name, g, torch[name].Data, Fp32Tol);
            TestContext.Out.WriteLine($"[{kase}] loss: engine fp64 {loss64:R}, engine fp32 {loss32:R}, torch {torch["loss"].Data[0]:R}");
            c64.AssertAll();
            c32.AssertAll();
        }
        finally { TorchWorker.Cleanup(dir); }
    }

    [Test]
    public void Decode_PrefillThenSingleTokenSteps_KvCacheLogits()
    {
        // 3 slots, a 5-token prompt each, then 4 single-token steps; LoRA r = 8, alpha = 16 on q_proj and
        // v_proj (method.md's setting; dropout is off at inference). Logits (K+1, B, V) compared.
        string dir = TorchWorker.NewDir("decode");
        try
        {
            var cfg = LlamaConfig.Tiny;
            int b = 3, p = 5, k = 4, v = cfg.Vocab;
            var lora = new LoraConfig { Rank = 8, Alpha = 16, Dropout = 0.05f, Targets = [Proj.q_proj, Proj.v_proj] };
            var prompt = Enumerable.Range(0, b * p).Select(i => (int)(CounterRng.Hash(41, (ulong)i) % (ulong)v)).ToArray();
            var feed = Enumerable.Range(0, b * k).Select(i => (int)(CounterRng.Hash(42, (ulong)i) % (ulong)v)).ToArray();

            var ops = new CpuBackend<double>();
            using var m = new LlamaModel(ops, cfg, DType.F32, trainBase: false, seed: 3);
            Randomize(ops, m, 300);
            ulong s = 400;
            foreach (var a in m.AddLora(lora, seed: 6, trainable: false))
            {
                ops.Upload(a.A.W, Uniform(a.A.Length, s++, 1f / MathF.Sqrt(a.A.Shape[1])));
                ops.Upload(a.B.W, Uniform(a.B.Length, s++, 0.5f));
            }
            ModelIO.SaveBase(m, dir);
            ModelIO.SaveLora(m, Path.Combine(dir, "adapter"), lora);
            SafeTensors.Write(Path.Combine(dir, "decode.safetensors"), [TorchWorker.I32("prompt", [b, p], prompt), TorchWorker.I32("feed", [b, k], feed)]);

            // engine: prefill rows (slot, position) = (i, j), logits of each slot's last prompt row; then one row per slot per step
            double[] Engine(IBackend o, LlamaModel model, Func<int[], int[], int[], KvCache, int[], double[]> forward)
            {
                using var cache = new KvCache(model, b, p + k, b * p);
                var all = new List<double>();
                all.AddRange(forward(prompt, Enumerable.Range(0, b * p).Select(i => i / p).ToArray(), Enumerable.Range(0, b * p).Select(i => i % p).ToArray(),
                    cache, Enumerable.Range(0, b).Select(i => i * p + p - 1).ToArray()));
                for (int step = 0; step < k; step++)
                    all.AddRange(forward(Enumerable.Range(0, b).Select(i => feed[i * k + step]).ToArray(), Enumerable.Range(0, b).ToArray(),
                        Enumerable.Repeat(p + step, b).ToArray(), cache, Enumerable.Range(0, b).ToArray()));
                return all.ToArray();
            }
            var e64 = Engine(ops, m, (t, sl, ps, c, lr) => ops.Read(m.ForwardRowsDevice(t, sl, ps, c, lr)!));
            var ops32 = new CpuBackend();
            using var m32 = new LlamaModel(ops32, cfg, DType.F32, trainBase: false, seed: 99);
            ModelIO.LoadBase(m32, dir);
            ModelIO.LoadLora(m32, Path.Combine(dir, "adapter"));
            var e32 = Engine(ops32, m32, (t, sl, ps, c, lr) => m32.ForwardRows(t, sl, ps, c, lr).Select(x => (double)x).ToArray());

            var torch = TorchWorker.Run("decode", dir);
            Assert.That(torch["logits"].Shape, Is.EqualTo(new long[] { k + 1, b, v }), "torch logits shape");
            var c64 = new Comparer("fp64");
            var c32 = new Comparer("fp32");
            for (int step = 0; step <= k; step++)
            {
                var t = torch["logits"].Data.AsSpan(step * b * v, b * v);
                c64.Check($"logits step {step}", e64.AsSpan(step * b * v, b * v), t, Fp64Tol);
                c32.Check($"logits step {step}", e32.AsSpan(step * b * v, b * v), t, Fp32Tol);
            }
            c64.AssertAll();
            c32.AssertAll();
        }
        finally { TorchWorker.Cleanup(dir); }
    }
}
