using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using NegDistill.Model;
using NegDistill.Runtime;

using NegDistill.Method;

namespace NegDistill.Cli.Gpu;

/// <summary>
/// `negdistill interop`: what another implementation needs to check NegDistill's checkpoint code against
/// its own (tools/gpu/peer.py does it with transformers and peft):
///   logits        the logits of a Hugging Face LLaMA folder (+ an optional PEFT LoRA) for given token ids,
///                 as JSON;
///   random-lora   a PEFT LoRA adapter with random non-zero A and B for a base folder (a fresh LoRA has
///                 B = 0 and would change no logit), written as every NegDistill stage writes its adapter.
/// </summary>
static class InteropVerb
{
    public static Command Build()
    {
        var cmd = new Command("interop", "Checkpoint interop with other implementations: logits of a checkpoint (+ adapter) as JSON, or a random PEFT adapter.");

        var logits = new Command("logits", "Logits of a Hugging Face LLaMA folder (+ optional PEFT LoRA) for token ids, written as JSON.");
        var lBase = new Option<string>("--base") { Description = "Hugging Face LLaMA folder", Required = true };
        var lAdapter = new Option<string?>("--adapter") { Description = "PEFT LoRA folder to apply" };
        var lTokens = new Option<string>("--tokens") { Description = "token ids: rows separated by ';', ids by ','; rows of equal length", Required = true };
        var lOut = new Option<string>("--out") { Description = "JSON file to write", Required = true };
        var lLast = new Option<bool>("--last-only") { Description = "only the last position's logits of each row (for large vocabularies and models)" };
        var lDev = new Option<string>("--device") { Description = Backends.Help, DefaultValueFactory = _ => "cpu" };
        foreach (var o in new Option[] { lBase, lAdapter, lTokens, lOut, lLast, lDev }) logits.Options.Add(o);
        logits.SetAction(r => Cli.Guarded(_ => Logits(r.GetValue(lBase)!, r.GetValue(lAdapter), r.GetValue(lTokens)!, r.GetValue(lOut)!, r.GetValue(lLast), r.GetValue(lDev)!)));
        cmd.Subcommands.Add(logits);

        var rl = new Command("random-lora", "Write a PEFT LoRA adapter with random non-zero A and B for a base folder.");
        var rBase = new Option<string>("--base") { Description = "Hugging Face LLaMA folder (config.json is read)", Required = true };
        var rOut = new Option<string>("--out") { Description = "adapter folder to write", Required = true };
        var rR = new Option<int>("--lora-r") { Description = "rank", DefaultValueFactory = _ => 8 };
        var rA = new Option<float>("--lora-alpha") { Description = "alpha", DefaultValueFactory = _ => 16f };
        var rT = new Option<string>("--targets") { Description = "comma-separated projections", DefaultValueFactory = _ => "q_proj,v_proj" };
        var rSeed = new Option<ulong>("--seed") { Description = "seed of A and B", DefaultValueFactory = _ => 3UL };
        foreach (var o in new Option[] { rBase, rOut, rR, rA, rT, rSeed }) rl.Options.Add(o);
        rl.SetAction(r => Cli.Guarded(_ => RandomLora(r.GetValue(rBase)!, r.GetValue(rOut)!, r.GetValue(rR), r.GetValue(rA), r.GetValue(rT)!, r.GetValue(rSeed))));
        cmd.Subcommands.Add(rl);
        return cmd;
    }

    static int[][] ParseTokens(string s, int vocab)
    {
        var rows = s.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(row => row.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(x =>
                int.TryParse(x, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) && v >= 0 && v < vocab ? v
                    : throw new ArgumentException($"--tokens: '{x}' is not a token id in [0, {vocab})")).ToArray()).ToArray();
        if (rows.Length == 0 || rows[0].Length == 0) throw new ArgumentException("--tokens: no token ids");
        if (rows.Any(r => r.Length != rows[0].Length)) throw new ArgumentException("--tokens: every row must have the same length");
        return rows;
    }

    static int Logits(string baseDir, string? adapter, string tokens, string outFile, bool lastOnly, string device)
    {
        var cfg = ModelIO.ReadConfig(baseDir);
        var rows = ParseTokens(tokens, cfg.Vocab);
        int b = rows.Length, t = rows[0].Length;
        using var ops = Backends.Create(device);
        var sw = Stopwatch.StartNew();
        using var m = new LlamaModel(ops, cfg with { MaxSeq = Math.Max(cfg.MaxSeq, t) }, ModelIO.StorageDType(baseDir), drawOnDevice: true);
        ModelIO.LoadBase(m, baseDir);
        if (adapter != null)
        {
            var (_, extra) = ModelIO.LoadLora(m, adapter);
            if (extra.Count > 0) throw new ArgumentException($"--adapter {adapter}: holds {extra.Count} tensors that are not LoRA factors (e.g. {extra[0].Name}); interop logits takes a plain LoRA");
        }
        double load = sw.Elapsed.TotalSeconds;
        var tok = rows.SelectMany(r => r).ToArray();
        var batch = new ModelBatch(b, t, tok, Enumerable.Repeat(-1, b * t).ToArray(), Enumerable.Repeat(1f, b * t).ToArray());
        sw.Restart();
        var z = m.Logits(batch);
        double fwd = sw.Elapsed.TotalSeconds;
        var sb = new StringBuilder();
        sb.Append("{\"load_seconds\":").Append(load.ToString("R", CultureInfo.InvariantCulture))
          .Append(",\"forward_seconds\":").Append(fwd.ToString("R", CultureInfo.InvariantCulture))
          .Append(",\"vocab\":").Append(cfg.Vocab).Append(",\"weights\":\"").Append(ModelIO.StorageDType(baseDir)).Append("\",\"logits\":[");
        for (int r = 0; r < b; r++)
        {
            if (r > 0) sb.Append(',');
            sb.Append('[');
            int p0 = lastOnly ? t - 1 : 0;
            for (int p = p0; p < t; p++)
            {
                if (p > p0) sb.Append(',');
                sb.Append('[');
                long o = ((long)r * t + p) * cfg.Vocab;
                for (int v = 0; v < cfg.Vocab; v++)
                {
                    if (v > 0) sb.Append(',');
                    sb.Append(z[o + v].ToString("R", CultureInfo.InvariantCulture));
                }
                sb.Append(']');
            }
            sb.Append(']');
        }
        sb.Append("]}");
        Checkpoints.AtomicFile.Write(outFile, s => { var bytes = Encoding.UTF8.GetBytes(sb.ToString()); s.Write(bytes, 0, bytes.Length); });
        Console.WriteLine($"logits of {b} × {t} tokens ({cfg.Layers} layers × {cfg.Dim}, {ModelIO.StorageDType(baseDir)}) → {outFile}; load {load:F1} s, forward {fwd:F2} s");
        return ExitCodes.Ok;
    }

    static int RandomLora(string baseDir, string outDir, int r, float alpha, string targets, ulong seed)
    {
        var cfg = ModelIO.ReadConfig(baseDir);
        var lora = new LoraConfig { Rank = r, Alpha = alpha, Dropout = 0f, Targets = targets.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(LoraConfig.ParseTarget).ToArray() };
        using var ops = new CpuBackend();
        using var m = new LlamaModel(ops, cfg, DType.BF16, drawOnDevice: true);
        var adapters = m.AddLora(lora, seed);
        ulong i = 0;
        foreach (var a in adapters) ops.FillNormal(a.B.W, 0.05f, CounterRng.Derive(seed, 0xB, i++));
        ModelIO.SaveLora(m, outDir, lora, baseModel: Path.GetFullPath(baseDir));
        Console.WriteLine($"random LoRA (r {r}, alpha {alpha}, {string.Join("/", lora.Targets)}, non-zero B) for {baseDir} → {outDir}");
        return ExitCodes.Ok;
    }
}
