using System.Diagnostics;
using NegDistill.Infer;
using NegDistill.Kernels;
using NegDistill.Model;
using NegDistill.Runtime;

namespace NegDistill.GpuCheck;

/// <summary>
/// gpu-check's whole-model parts: a full training step on the device against the CPU twin (tiny, and a
/// 2-layer model at LLaMA-7b width), the training stages timed at 7B shape (LoRA as in neg / KD, NAT,
/// NCE; each with and without recompute; peak device memory beside the memory plan), and decoding
/// tokens/s at batch 1, 16 and 64. Weights are random, made on the device (nothing is downloaded).
/// </summary>
public sealed class StageRuns(IBackend dev, IBackend twin, GpuReport rep, Budget budget, bool quick)
{
    LlamaConfig Cfg => quick ? LlamaConfig.Tiny : LlamaConfig.Llama7B;
    DType Weights => quick ? DType.F32 : DType.BF16;
    (int B, int T) Shape => quick ? (2, 16) : (16, 256);

    // ------------------------------------------------------------------ device vs twin, one step
    public void ModelChecks()
    {
        Check("tiny", LlamaConfig.Tiny, DType.F32, 2, 16, 20);
        if (!quick) Check("2 layers at 7B width", LlamaConfig.Llama7B with { Layers = 2 }, DType.BF16, 2, 64, 120);
    }

    void Check(string label, LlamaConfig cfg, DType dt, int b, int t, double need)
    {
        if (!budget.Has(need)) { rep.NotReached.Add($"model check {label}"); return; }
        var lora = new LoraConfig { Dropout = 0f };
        using var mt = new LlamaModel(twin, cfg, dt, seed: 7, drawOnDevice: true);
        using var md = new LlamaModel(dev, cfg, dt, seed: 7, drawOnDevice: true);
        CopyWeights(mt, md);
        mt.AddLora(lora, seed: 8); md.AddLora(lora, seed: 8);
        foreach (var key in mt.Adapters.Keys)
        {
            // B starts at zero; random B so that every LoRA gradient is non-trivial
            var bt = ((LoraAdapter)mt.Adapters[key]).B; var bd = ((LoraAdapter)md.Adapters[key]).B;
            var v = OpCases.Rand(bt.Length, 0.05f);
            twin.Upload(bt.W, v); dev.Upload(bd.W, v);
        }
        var batch = RandomBatch(cfg, b, t, seed: 9, padLast: 3);
        double lt = StepOnce(mt, batch), ld = StepOnce(md, batch);
        double tol = MatMulTolerance.For(dev).Bf16B > Tolerances.Fp32 ? Tolerances.ModelBf16 : Tolerances.ModelFp32;
        string shape = $"{cfg.Layers}×{cfg.Dim}, {dt}, {b}×{t}";
        Row(label, shape, "loss", Math.Abs(ld - lt) / Math.Abs(lt), tol, 0, $"{ld:F6} vs {lt:F6}");
        var gt = mt.TrainableParameters.SelectMany(p => CheckRun.Get(twin, p.Grad!)).ToArray();
        var gd = md.TrainableParameters.SelectMany(p => CheckRun.Get(dev, p.Grad!)).ToArray();
        var (rg, bg) = CheckRun.Diff(gd, gt);
        Row(label, shape, $"every LoRA gradient ({gt.Length} values)", rg, tol, bg);
        var (rl, bl) = CheckRun.Diff(md.Logits(batch), mt.Logits(batch));
        Row(label, shape, "logits", rl, tol, bl);
    }

    void Row(string label, string shape, string what, double rel, double tol, long bad, string? note = null)
    {
        var r = new CheckRow("model step", label, what, shape, rel, tol, bad, bad == 0 && rel <= tol, note);
        rep.Checks.Add(r);
        CheckRun.Print(r);
    }

    static double StepOnce(LlamaModel m, ModelBatch batch)
    {
        foreach (var p in m.TrainableParameters) m.Ops.Fill(p.Grad!, 0f);
        m.Pass.StepSeed = 1;
        double loss = m.Step(batch, new CrossEntropyHead(), backward: true);
        m.Ops.Synchronize();
        return loss;
    }

    /// <summary>Copies every base weight of <paramref name="from"/> into <paramref name="to"/> as stored
    /// (raw 16-bit words for BF16/F16), so both backends hold the same bits.</summary>
    static void CopyWeights(LlamaModel from, LlamaModel to)
    {
        foreach (var (a, b) in from.BaseParameters.Zip(to.BaseParameters))
        {
            if (a.W.DType == DType.F32) { var v = new float[a.W.Length]; from.Ops.Download(a.W, v); to.Ops.Upload(b.W, v); }
            else { var v = new ushort[a.W.Length]; from.Ops.DownloadRaw16(a.W, v); to.Ops.UploadRaw16(b.W, v); }
        }
    }

    static ModelBatch RandomBatch(LlamaConfig cfg, int b, int t, ulong seed, int padLast = 0)
    {
        var tok = new int[b * t]; var tgt = new int[b * t]; var mask = new float[b * t];
        for (int i = 0; i < b * t; i++) tok[i] = 3 + (int)(CounterRng.Hash(seed, (ulong)i) % (ulong)(cfg.Vocab - 3));
        for (int r = 0; r < b; r++)
            for (int j = 0; j < t; j++)
            {
                int i = r * t + j;
                bool real = r < b - 1 || j < t - padLast;             // the last row is right-padded
                mask[i] = real ? 1f : 0f;
                if (!real) tok[i] = 0;
                tgt[i] = real && j + 1 < t && (r < b - 1 || j + 1 < t - padLast) ? tok[i + 1] : -1;
            }
        return new ModelBatch(b, t, tok, tgt, mask);
    }

    // ------------------------------------------------------------------ training stages at 7B shape
    public void TrainingSteps()
    {
        var cfg = Cfg; var (b, t) = Shape;
        double need = quick ? 10 : 90;
        if (!budget.Has(need + 30)) { rep.NotReached.Add("training stages"); return; }
        var lora = new LoraConfig();
        var sw = Stopwatch.StartNew();
        using var m = new LlamaModel(dev, cfg, Weights, seed: 11, drawOnDevice: true);
        dev.Synchronize();
        rep.Notes.Add($"random {cfg.ParameterCount / 1e9:F2} G-parameter base ({Weights}) made on the device in {sw.Elapsed.TotalSeconds:F1} s");
        GpuCheck.Say(rep.Notes[^1]);
        var batch = RandomBatch(cfg, b, t, seed: 12);
        string shape = $"{cfg.Layers} layers × {cfg.Dim}, {b} × {t}";
        var nat = new MemoryPlan.NatPlan(lora, lora);
        foreach (bool recompute in new[] { false, true })
        {
            string setting = $"{shape}, recompute {(recompute ? "on" : "off")}";
            m.Recompute = recompute;

            if (!budget.Has(need)) { rep.NotReached.Add($"LoRA step, {setting} (and the stages after it)"); return; }
            m.ClearAdapters();
            ResetPeak();
            m.AddLora(lora, seed: 13);
            var head = new CrossEntropyHead();
            TimeStage("LoRA step (neg / KD / MIX)", setting, m, batch, lora, () => m.Step(batch, head, backward: true), m.TrainableParameters.ToList(),
                MemoryPlan.ForTraining(cfg, Weights, lora, b, t, recompute, logitsBudget: m.LogitsBudget));

            if (!budget.Has(need * 1.3)) { rep.NotReached.Add($"NAT step, {setting} (and the stages after it)"); return; }
            m.ClearAdapters();
            ResetPeak();
            m.AddLora(lora, seed: 14, trainable: false);
            NatAdapter.Attach(m, lora, lora, seed: 15);
            TimeStage("NAT step", setting, m, batch, lora, () => m.Step(batch, head, backward: true), m.TrainableParameters.ToList(),
                MemoryPlan.ForTraining(cfg, Weights, lora, b, t, recompute, logitsBudget: m.LogitsBudget, stage: TrainingStage.Nat, nat: nat));

            if (!budget.Has(need * 2)) { rep.NotReached.Add($"NCE step, {setting} (and the stages after it)"); return; }
            m.ClearAdapters();
            ResetPeak();
            m.AddLora(lora, seed: 16, trainable: false);
            NatAdapter.Attach(m, lora, lora, seed: 17, trainable: false);
            var teacher = m.DetachAdapters();
            var students = m.AddLora(lora, seed: 18);
            try
            {
                TimeStage("NCE step (NAT + LoRA_neg teachers, student LoRA)", setting, m, batch, lora,
                    () => NegDistill.Method.Stages.NceStage.Step(m, teacher, batch, backward: true, training: true).Loss,
                    students.SelectMany(s => s.Parameters).ToList(),
                    MemoryPlan.ForTraining(cfg, Weights, lora, b, t, recompute, logitsBudget: m.LogitsBudget, stage: TrainingStage.Nce, nat: nat));
            }
            finally
            {
                foreach (var a in teacher.Values) a.Dispose();   // detached: the model disposes only the student's
            }
        }
    }

    void TimeStage(string stage, string setting, LlamaModel m, ModelBatch batch, LoraConfig lora, Func<double> step, List<Param> trainable, MemoryPlan plan)
    {
        int s = 0;
        double loss = 0;
        void One()
        {
            foreach (var p in trainable) dev.Fill(p.Grad!, 0f);
            m.Pass.StepSeed = (ulong)++s;
            loss = step();
            foreach (var p in trainable) dev.AdamW(p.W, p.Grad!, p.M!, p.V!, p.Length, 3e-4f, 0.9f, 0.999f, 1e-8f, 0f, s);
            dev.Synchronize();
        }
        var sw = Stopwatch.StartNew();
        One();                                               // warm-up: allocation, kernel compilation
        double first = sw.Elapsed.TotalSeconds;
        var times = new List<double>();
        while (times.Count < (quick ? 1 : 3) && budget.Has(first * 1.5 + 5))
        {
            sw.Restart(); One(); times.Add(sw.Elapsed.TotalSeconds);
        }
        if (times.Count == 0) times.Add(first);
        times.Sort();
        double sec = times[times.Count / 2];
        int tokens = batch.B * batch.T;
        double flops = m.Config.LoraStepFlops(batch.B, batch.T);
        rep.Stages.Add(new StageRow(stage, setting, sec * 1e3, tokens / sec, flops / sec / 1e12, PeakBytes() / (double)(1L << 30), plan.Total / (double)(1L << 30), times.Count));
        if (!double.IsFinite(loss)) rep.Checks.Add(new CheckRow("stages", stage, "loss is finite", setting, double.NaN, 0, 1, false, $"loss {loss}"));
        var r = rep.Stages[^1];
        GpuCheck.Say($"  stage {stage}, {setting}: {r.MsPerStep:F1} ms/step, {r.TokensPerSecond:F0} tok/s, {r.Tflops:F1} TFLOP/s, peak {r.PeakGib:F1} GiB (plan {r.PlanGib:F1}), loss {loss:F3}");
    }

    // ------------------------------------------------------------------ decoding
    public void Decode()
    {
        var cfg = Cfg;
        int prompt = quick ? 8 : 128, newTokens = quick ? 8 : 256;
        int[] batches = quick ? [1, 2, 4] : [1, 16, 64];
        if (!budget.Has(quick ? 5 : 60)) { rep.NotReached.Add("decoding"); return; }
        var lora = new LoraConfig();
        using var m = new LlamaModel(dev, cfg, Weights, seed: 21, drawOnDevice: true);
        m.AddLora(lora, seed: 22, trainable: false);
        // every batch with the backend's own KV cache (BF16 on CUDA), the largest also with the other kind
        var own = dev.DefaultKvCache;
        var other = own == DType.F32 ? DType.BF16 : DType.F32;
        var runs = batches.Select(b => (b, own)).Append((batches[^1], other));
        foreach (var (b, cache) in runs)
        {
            if (!budget.Has(quick ? 3 : 30)) { rep.NotReached.Add($"decode at batch {b}, {cache} cache (and later runs)"); return; }
            var prompts = Enumerable.Range(0, b).Select(i => Enumerable.Range(0, prompt).Select(j => 3 + (int)(CounterRng.Hash((ulong)(100 + i), (ulong)j) % (ulong)(cfg.Vocab - 3))).ToArray()).ToList();
            SamplerSettings Settings(int n) => new() { Temperature = 0f, MaxNewTokens = n, Eos = -1, Slots = b, MaxSeq = prompt + newTokens, Seed = 1, Cache = cache };
            using (var warm = new Sampler(m, Settings(2))) warm.Run(prompts.Select((p, i) => new SampleRequest(i, p, 1)));
            ResetPeak();
            using var sampler = new Sampler(m, Settings(newTokens));
            var samples = sampler.Run(prompts.Select((p, i) => new SampleRequest(i, p, 1)));
            var st = sampler.Stats;
            var plan = MemoryPlan.ForSampling(cfg, Weights, lora, b, prompt + newTokens, b + 256, cache: cache);
            rep.Stages.Add(new StageRow($"decode ({cache} KV cache, greedy, LoRA q/v)", $"batch {b}, prompt {prompt}, {newTokens} new tokens", 1e3 * st.Elapsed.TotalSeconds / Math.Max(1, st.Steps),
                st.TokensPerSecond, 0, PeakBytes() / (double)(1L << 30), plan.Total / (double)(1L << 30), st.Steps));
            if (samples.Any(x => x.TokenCount != newTokens))
                rep.Checks.Add(new CheckRow("decode", "Sampler", "every sequence reached its token budget", $"batch {b}", double.NaN, 0, samples.Count(x => x.TokenCount != newTokens), false));
            var r = rep.Stages[^1];
            GpuCheck.Say($"  decode batch {b}, {cache} cache: {r.TokensPerSecond:F0} tok/s ({r.MsPerStep:F2} ms per step), peak {r.PeakGib:F2} GiB (plan {r.PlanGib:F2})");
        }
        // N candidates per question with shared prompts against each candidate holding its own, at the largest batch
        int bMax = batches[^1], n = quick ? 2 : 16;
        foreach (bool share in new[] { false, true })
        {
            if (!budget.Has(quick ? 3 : 30)) { rep.NotReached.Add("decode with shared prompts"); return; }
            var reqs = Enumerable.Range(0, bMax / n).Select(qi => new SampleRequest(qi,
                Enumerable.Range(0, prompt).Select(j => 3 + (int)(CounterRng.Hash((ulong)(500 + qi), (ulong)j) % (ulong)(cfg.Vocab - 3))).ToArray(), n)).ToList();
            var st0 = new SamplerSettings { Temperature = 1f, MaxNewTokens = newTokens, Eos = -1, Slots = bMax, MaxSeq = prompt + newTokens, Seed = 1, Cache = own };
            var set = share ? st0 with { SharedPrompts = Math.Max(2, 2 * reqs.Count), PromptPositions = prompt - 1 } : st0;
            using (var warm = new Sampler(m, set with { MaxNewTokens = 2 })) warm.Run(reqs);
            ResetPeak();
            using var sampler = new Sampler(m, set);
            sampler.Run(reqs);
            var st = sampler.Stats;
            var plan = MemoryPlan.ForSampling(cfg, Weights, lora, bMax, prompt + newTokens, bMax + 256, cache: own, layout: set.Layout);
            rep.Stages.Add(new StageRow($"decode ({own} KV cache, T 1, {(share ? "shared prompts" : "own prompts")}, LoRA q/v)",
                $"batch {bMax} = {reqs.Count} questions × {n}, prompt {prompt}, {newTokens} new tokens", 1e3 * st.Elapsed.TotalSeconds / Math.Max(1, st.Steps),
                st.TokensPerSecond, 0, PeakBytes() / (double)(1L << 30), plan.Total / (double)(1L << 30), st.Steps));
            var r = rep.Stages[^1];
            GpuCheck.Say($"  decode {(share ? "shared" : "own")} prompts, batch {bMax}: {r.TokensPerSecond:F0} tok/s ({st.PromptTokens} prompt rows), peak {r.PeakGib:F2} GiB (plan {r.PlanGib:F2})");
        }
    }

    void ResetPeak()
    {
        if (dev is IlgpuBackend i) i.ResetPeak();
    }

    long PeakBytes() => dev switch
    {
        IlgpuBackend i => i.PeakBytes,
        CpuBackend c => c.PeakBytes,
        _ => 0,
    };
}
