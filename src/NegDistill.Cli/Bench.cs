using System.CommandLine;
using System.Diagnostics;
using NegDistill.Method;
using System.Text;
using NegDistill.Model;
using NegDistill.Runtime;
using NegDistill.Train;

namespace NegDistill.Cli;

/// <summary>
/// `negdistill bench train`: one LoRA training step (forward, backward, AdamW) of a preset, timed op by
/// op through <see cref="ProfilingBackend"/>, with the backend's own 1024³ matmul measured in the same
/// process as the reference the step's achieved FLOP rate is compared with.
/// </summary>
static class Bench
{
    public static Command Build()
    {
        var bench = new Command("bench", "Measure the engine on this machine.");
        var train = new Command("train", "Time one LoRA training step (forward, backward, AdamW) op by op, against this backend's 1024³ matmul measured in the same run.");
        var preset = new Option<string>("--preset") { Description = "model shape: " + string.Join(", ", LlamaConfig.PresetNames), DefaultValueFactory = _ => "small" };
        var batch = new Option<int>("--batch") { Description = "sequences per step", DefaultValueFactory = _ => 4 };
        var seq = new Option<int>("--seq") { Description = "tokens per sequence", DefaultValueFactory = _ => 256 };
        var steps = new Option<int>("--steps") { Description = "timed steps (after one warm-up step)", DefaultValueFactory = _ => 3 };
        var md = new Option<string?>("--markdown") { Description = "also append the tables to this Markdown file" };
        var device = new Option<string>("--device") { Description = Backends.Help, DefaultValueFactory = _ => "cpu" };
        foreach (var o in new Option[] { preset, batch, seq, steps, md, device }) train.Options.Add(o);
        train.SetAction(r => Cli.Guarded(_ =>
        {
            string p = r.GetValue(preset)!, d = r.GetValue(device)!;
            int b = r.GetValue(batch), t = r.GetValue(seq), n = r.GetValue(steps);
            var problems = new List<string>();
            if (!LlamaConfig.PresetNames.Contains(p)) problems.Add($"--preset: '{p}' is not {string.Join(", ", LlamaConfig.PresetNames)}");
            if (!Backends.Names.Contains(d)) problems.Add($"--device: unknown device '{d}' ({string.Join(", ", Backends.Names)})");
            if (b < 1) problems.Add($"--batch: must be positive (got {b})");
            if (t < 2) problems.Add($"--seq: must be at least 2 (got {t})");
            if (n < 1) problems.Add($"--steps: must be positive (got {n})");
            if (problems.Count > 0) throw new Method.Settings.SettingsException(null, problems);
            string? file = r.GetValue(md);
            using var w = file == null ? null : new StreamWriter(file, append: true);
            return Train(p, d, b, t, n, w);
        }));
        bench.Subcommands.Add(train);
        return bench;
    }

    public static int Train(string preset, string device, int batch, int seq, int steps, TextWriter? md)
    {
        var cfg = LlamaConfig.Preset(preset) with { MaxSeq = Math.Max(seq, 16) };
        using var inner = Backends.Create(device);
        var ops = new ProfilingBackend(inner);

        // reference: the backend's matmul at 1024³
        double gemm = MatMulRate(inner, 1024, 3);

        using var m = new LlamaModel(ops, cfg, DType.F32, seed: 1);
        m.AddLora(new LoraConfig(), seed: 2);
        var tok = new int[batch * seq]; var tgt = new int[batch * seq]; var mask = new float[batch * seq];
        for (int i = 0; i < tok.Length; i++) { tok[i] = (int)(CounterRng.Hash(5, (ulong)i) % (ulong)cfg.Vocab); mask[i] = 1; }
        for (int i = 0; i < tok.Length; i++) tgt[i] = (i + 1) % seq == 0 ? -1 : tok[i + 1];
        var b = new ModelBatch(batch, seq, tok, tgt, mask);
        var head = new CrossEntropyHead();
        var trainable = m.TrainableParameters.ToList();
        void Step(int s)
        {
            foreach (var p in trainable) ops.Fill(p.Grad!, 0f);
            m.Pass.StepSeed = (ulong)s;
            m.Step(b, head, backward: true);
            foreach (var p in trainable) ops.AdamW(p.W, p.Grad!, p.M!, p.V!, p.Length, 3e-4f, 0.9f, 0.999f, 1e-8f, 0f, s);
            ops.Synchronize();
        }
        Step(1);                                  // warm-up: allocation, kernel compilation
        ops.Reset();
        var sw = Stopwatch.StartNew();
        for (int s = 2; s < 2 + steps; s++) Step(s);
        double sec = sw.Elapsed.TotalSeconds / steps;
        double tokens = batch * seq;
        double flops = cfg.LoraStepFlops(batch, seq);

        var sb = new StringBuilder();
        sb.AppendLine($"LoRA training step, preset {preset} ({cfg.ParameterCount / 1e6:F1}M parameters), batch {batch} × {seq} tokens, device {inner.Name}, {steps} timed steps");
        sb.AppendLine();
        sb.AppendLine("| measure | value |");
        sb.AppendLine("|---|---|");
        sb.AppendLine($"| step time | {sec * 1000:F1} ms |");
        sb.AppendLine($"| tokens/s | {tokens / sec:F0} |");
        sb.AppendLine($"| step FLOPs (estimate: 2× forward matmuls + 3× attention) | {flops / 1e9:F1} GFLOP |");
        sb.AppendLine($"| achieved | {flops / sec / 1e9:F1} GFLOP/s |");
        sb.AppendLine($"| reference: this backend's 1024³ matmul, same run | {gemm:F1} GFLOP/s |");
        sb.AppendLine($"| ratio achieved / reference | {flops / sec / 1e9 / gemm:F2} |");
        sb.AppendLine();
        sb.AppendLine("| op | share of step time | ms per step | calls per step |");
        sb.AppendLine("|---|---|---|---|");
        var rep = ops.Report();
        double total = rep.Sum(r => r.Seconds);
        foreach (var (op, s, calls) in rep)
            sb.AppendLine($"| {op} | {100 * s / total:F1} % | {1000 * s / steps:F2} | {calls / steps} |");
        Console.WriteLine(sb.ToString());
        md?.Write(sb.ToString());
        return ExitCodes.Ok;
    }


    static double MatMulRate(IBackend ops, int n, int reps)
    {
        using var a = ops.Alloc("a", DType.F32, n, n); using var w = ops.Alloc("w", DType.F32, n, n); using var c = ops.Alloc("c", DType.F32, n, n);
        ops.Upload(a, Enumerable.Range(0, n * n).Select(i => (i % 7) * 0.1f).ToArray());
        ops.Upload(w, Enumerable.Range(0, n * n).Select(i => (i % 5) * 0.1f).ToArray());
        ops.MatMul(c, a, w, n, n, n, false, true); ops.Synchronize();
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < reps; i++) ops.MatMul(c, a, w, n, n, n, false, true);
        ops.Synchronize();
        return 2.0 * n * n * n * reps / sw.Elapsed.TotalSeconds / 1e9;
    }
}
