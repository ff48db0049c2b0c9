// Worker: one parity case, run by tests/NegDistill.TorchParity.Tests as a child process.
//   worker CASE IN_DIR OUT_DIR
// Reads the case's inputs from IN_DIR (safetensors + small JSON), runs forward and autograd backward in
// float64 with TorchLlama / TorchNat / TorchNce (TorchSharp ops only), writes OUT_DIR/out.safetensors (F64).
//
// case        IN_DIR                                                          out.safetensors
// llama-step  config.json, model.safetensors (HF names), batch.safetensors:     logits (B,T,V), loss [],
//             tokens (B,T) int, targets (B,T) int (−1 = no loss), mask (B,T)    the gradient of every base weight by name
// lora-step   the same + adapter/adapter_config.json, adapter/adapter_model.safetensors (PEFT):
//             base frozen, LoRA trainable                                     logits, loss, gradients of every lora_A/lora_B
// nat         nat.json {prefix, r_pos, alpha_pos, r_neg, alpha_neg, beta,     y (N,out), alpha (N), dx (N,in), gradients of
//             temperature, train_base}; nat.safetensors: x (N,in), dy (N,out),  PREFIX.lora_A/lora_B.weight,
//             base.weight (out,in), PREFIX.lora_A/B.weight (pos),              PREFIX.integration.{Q,K,U1,U2}.weight, and
//             neg/PREFIX.lora_A/B.weight, PREFIX.integration.{Q,K,U1,U2}.weight base.weight when train_base; L = Σ y ⊙ dy
// nce         nce.json {a, temperature};                                      loss [], ce [], kd [], kl (B,T), beta (B),
//             nce.safetensors: z_s, z_nat, z_neg (B,T,V), targets (B,T) int,   dz_s (B,T,V)
//             mask (B,T)
// decode      config.json, model.safetensors [+ adapter/ as in lora-step],   logits (K+1,B,V): [0] after the prefill,
//             decode.safetensors: prompt (B,P) int, feed (B,K) int             [k] after feeding feed[:,k−1] (KV cache, no grad)
// Exit codes: 0 ok, 2 bad input (the message names the file and tensor), 1 anything else.
using System.Diagnostics;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace NegDistill.TorchReference;

public static class Worker
{
    const string Usage = "usage: worker llama-step|lora-step|nat|nce|decode IN_DIR OUT_DIR";

    public static int Run(string[] args)
    {
        if (args.Length != 3) { Console.Error.WriteLine(Usage); return 2; }
        var (kase, inDir, outDir) = (args[0], args[1], args[2]);
        var sw = Stopwatch.StartNew();
        try
        {
            if (!Directory.Exists(inDir)) throw new InputException($"{inDir}: input folder not found");
            set_default_dtype(ScalarType.Float64);
            List<(string, Tensor)> outputs = kase switch
            {
                "llama-step" => LlamaStep(inDir, lora: false),
                "lora-step" => LlamaStep(inDir, lora: true),
                "nat" => Nat(inDir),
                "nce" => Nce(inDir),
                "decode" => Decode(inDir),
                _ => throw new InputException($"unknown case '{kase}' ({Usage})"),
            };
            Directory.CreateDirectory(outDir);
            SafeTensorsLite.Write(Path.Combine(outDir, "out.safetensors"), outputs);
            Console.WriteLine($"worker {kase}: {outputs.Count} tensors written to {Path.Combine(outDir, "out.safetensors")} in {sw.Elapsed.TotalSeconds:F2} s (libtorch {__version__})");
            return 0;
        }
        catch (InputException e) { Console.Error.WriteLine($"worker {kase}: bad input: {e.Message}"); return 2; }
        catch (Exception e) { Console.Error.WriteLine($"worker {kase}: failed: {e}"); return 1; }
    }

    // ------------------------------------------------------------------ helpers

    static Tensor Need(Dictionary<string, Tensor> d, string name, string file, params long[] shape)
    {
        if (!d.TryGetValue(name, out var t)) throw new InputException($"{file}: tensor '{name}' missing");
        if (shape.Length > 0 && !t.shape.SequenceEqual(shape))
            throw new InputException($"{file}: tensor '{name}' has shape [{string.Join(", ", t.shape)}], expected [{string.Join(", ", shape)}]");
        return t;
    }

    static JsonElement ReadJson(string path)
    {
        if (!File.Exists(path)) throw new InputException($"{path}: file not found");
        try { return JsonDocument.Parse(File.ReadAllText(path)).RootElement.Clone(); }
        catch (JsonException e) { throw new InputException($"{path}: not valid JSON ({e.Message})"); }
    }

    static double Num(JsonElement j, string field, string path) =>
        j.TryGetProperty(field, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble()
            : throw new InputException($"{path}: field '{field}' missing or not a number");

    static Tensor F64(Tensor t) => t.to(ScalarType.Float64);

    static Tensor GradOf(Tensor p, string name) =>
        p.grad is { } g ? g.detach().clone() : throw new InvalidOperationException($"no gradient reached '{name}'");

    /// <summary>HF checkpoint folder: model.safetensors, or the shards named in model.safetensors.index.json.</summary>
    static Dictionary<string, Tensor> ReadCheckpoint(string dir, out string where)
    {
        string single = Path.Combine(dir, "model.safetensors"), index = Path.Combine(dir, "model.safetensors.index.json");
        if (File.Exists(single)) { where = single; return SafeTensorsLite.Read(single); }
        if (!File.Exists(index)) throw new InputException($"{dir}: neither model.safetensors nor model.safetensors.index.json");
        where = index;
        var all = new Dictionary<string, Tensor>();
        var map = ReadJson(index).GetProperty("weight_map");
        foreach (var file in map.EnumerateObject().Select(p => p.Value.GetString()!).Distinct())
            foreach (var (k, v) in SafeTensorsLite.Read(Path.Combine(dir, file))) all[k] = v;
        return all;
    }

    // ------------------------------------------------------------------ cases

    /// <summary>The float64 model of DIR (config.json + checkpoint), with DIR/adapter's LoRA when <paramref name="lora"/>;
    /// base weights require grad unless there is a LoRA, LoRA factors require grad.</summary>
    static TorchLlama LoadModel(string dir, bool lora)
    {
        var cfg = TorchLlamaConfig.FromHfJson(Path.Combine(dir, "config.json"));
        var model = new TorchLlama(cfg, ScalarType.Float64);
        model.LoadWeights(ReadCheckpoint(dir, out string where), where);
        model.SetTrainBase(!lora);
        if (lora)
        {
            string adir = Path.Combine(dir, "adapter"), acfgPath = Path.Combine(adir, "adapter_config.json"), wPath = Path.Combine(adir, "adapter_model.safetensors");
            var acfg = ReadJson(acfgPath);
            int r = (int)Num(acfg, "r", acfgPath);
            double alpha = Num(acfg, "lora_alpha", acfgPath);
            if (acfg.TryGetProperty("use_rslora", out var rs) && rs.ValueKind == JsonValueKind.True)
                throw new InputException($"{acfgPath}: use_rslora = true is not modelled (scale alpha/√r)");
            var targets = acfg.TryGetProperty("target_modules", out var tm) && tm.ValueKind == JsonValueKind.Array
                ? tm.EnumerateArray().Select(e => e.GetString()!).ToArray()
                : throw new InputException($"{acfgPath}: target_modules missing or not a list");
            foreach (var t in targets)
                if (!TorchLlamaConfig.Projections.Contains(t)) throw new InputException($"{acfgPath}: unknown target module '{t}'");
            var aw = SafeTensorsLite.Read(wPath);
            for (int l = 0; l < cfg.Layers; l++)
                foreach (var p in targets)
                {
                    var (i, o) = cfg.ProjShape(p);
                    string pre = TorchLlamaConfig.LoraPrefix(l, p);
                    model.AddLora(l, p, r, alpha, Need(aw, pre + ".lora_A.weight", wPath, r, i), Need(aw, pre + ".lora_B.weight", wPath, o, r));
                }
            var known = new HashSet<string>(model.Parameters().Select(x => x.Name));
            foreach (var k in aw.Keys)
                if (!known.Contains(k)) throw new InputException($"{wPath}: tensor '{k}' matches no targeted module");
        }
        return model;
    }

    static List<(string, Tensor)> LlamaStep(string dir, bool lora)
    {
        using var model = LoadModel(dir, lora);
        var cfg = model.Config;
        string bpath = Path.Combine(dir, "batch.safetensors");
        var batch = SafeTensorsLite.Read(bpath);
        var tokens = Need(batch, "tokens", bpath);
        if (tokens.dim() != 2) throw new InputException($"{bpath}: tensor 'tokens' must be (B,T), has shape [{string.Join(", ", tokens.shape)}]");
        long B = tokens.shape[0], T = tokens.shape[1];
        var targetsT = Need(batch, "targets", bpath, B, T);
        var mask = F64(Need(batch, "mask", bpath, B, T));
        long tmin = tokens.to(ScalarType.Int64).min().item<long>(), tmax = tokens.to(ScalarType.Int64).max().item<long>();
        if (tmin < 0 || tmax >= cfg.Vocab) throw new InputException($"{bpath}: tensor 'tokens' has ids in [{tmin}, {tmax}], outside the vocabulary of {cfg.Vocab}");
        if (targetsT.to(ScalarType.Int64).max().item<long>() >= cfg.Vocab) throw new InputException($"{bpath}: tensor 'targets' has an id outside the vocabulary of {cfg.Vocab}");

        var logits = model.Forward(tokens, mask);                                   // (B,T,V)
        var loss = TorchLlama.CrossEntropy(logits, targetsT);
        loss.backward();
        var outputs = new List<(string, Tensor)> { ("logits", logits.detach()), ("loss", loss.detach()) };
        foreach (var (name, p) in model.Parameters())
            if (p.requires_grad) outputs.Add((name, GradOf(p, name)));
        return outputs;
    }

    static List<(string, Tensor)> Nat(string dir)
    {
        string jpath = Path.Combine(dir, "nat.json"), tpath = Path.Combine(dir, "nat.safetensors");
        var j = ReadJson(jpath);
        string prefix = j.TryGetProperty("prefix", out var pf) && pf.ValueKind == JsonValueKind.String ? pf.GetString()! : throw new InputException($"{jpath}: field 'prefix' missing");
        int rPos = (int)Num(j, "r_pos", jpath), rNeg = (int)Num(j, "r_neg", jpath);
        bool trainBase = j.TryGetProperty("train_base", out var tb) && tb.ValueKind == JsonValueKind.True;
        var t = SafeTensorsLite.Read(tpath);
        var x = F64(Need(t, "x", tpath));
        if (x.dim() != 2) throw new InputException($"{tpath}: tensor 'x' must be (N,in)");
        long n = x.shape[0], inF = x.shape[1];
        var w = F64(Need(t, "base.weight", tpath));
        if (w.dim() != 2 || w.shape[1] != inF) throw new InputException($"{tpath}: tensor 'base.weight' must be (out,{inF}), has [{string.Join(", ", w.shape)}]");
        long outF = w.shape[0];
        var dy = F64(Need(t, "dy", tpath, n, outF));
        string u = prefix + ".integration.";
        var qW = F64(Need(t, u + "Q.weight", tpath));
        long d = qW.shape[0];
        Need(t, u + "Q.weight", tpath, d, inF);
        var nat = new TorchNat
        {
            W = w,
            APos = F64(Need(t, prefix + ".lora_A.weight", tpath, rPos, inF)), BPos = F64(Need(t, prefix + ".lora_B.weight", tpath, outF, rPos)),
            ANeg = F64(Need(t, "neg/" + prefix + ".lora_A.weight", tpath, rNeg, inF)), BNeg = F64(Need(t, "neg/" + prefix + ".lora_B.weight", tpath, outF, rNeg)),
            Q = qW, K = F64(Need(t, u + "K.weight", tpath, d, outF)), U1 = F64(Need(t, u + "U1.weight", tpath, d, outF)), U2 = F64(Need(t, u + "U2.weight", tpath, outF, d)),
            ScalePos = Num(j, "alpha_pos", jpath) / rPos, ScaleNeg = Num(j, "alpha_neg", jpath) / rNeg,
            Beta = Num(j, "beta", jpath), Temperature = Num(j, "temperature", jpath),
        };
        var trainable = new List<(string, Tensor)>
        {
            (prefix + ".lora_A.weight", nat.APos), (prefix + ".lora_B.weight", nat.BPos),
            (u + "Q.weight", nat.Q), (u + "K.weight", nat.K), (u + "U1.weight", nat.U1), (u + "U2.weight", nat.U2),
        };
        if (trainBase) trainable.Add(("base.weight", nat.W));
        foreach (var (_, p) in trainable) p.requires_grad_(true);
        x.requires_grad_(true);
        var (y, alpha) = nat.Forward(x);
        (y * dy).sum().backward();                                                   // dL/dy = dy
        var outputs = new List<(string, Tensor)> { ("y", y.detach()), ("alpha", alpha.detach()), ("dx", GradOf(x, "x")) };
        foreach (var (name, p) in trainable) outputs.Add((name, GradOf(p, name)));
        return outputs;
    }

    static List<(string, Tensor)> Nce(string dir)
    {
        string jpath = Path.Combine(dir, "nce.json"), tpath = Path.Combine(dir, "nce.safetensors");
        var j = ReadJson(jpath);
        var t = SafeTensorsLite.Read(tpath);
        var zs = F64(Need(t, "z_s", tpath));
        if (zs.dim() != 3) throw new InputException($"{tpath}: tensor 'z_s' must be (B,T,V)");
        long B = zs.shape[0], T = zs.shape[1], V = zs.shape[2];
        var zNat = F64(Need(t, "z_nat", tpath, B, T, V));
        var zNeg = F64(Need(t, "z_neg", tpath, B, T, V));
        var targets = Need(t, "targets", tpath, B, T);
        var mask = F64(Need(t, "mask", tpath, B, T));
        if (targets.to(ScalarType.Int64).max().item<long>() >= V) throw new InputException($"{tpath}: tensor 'targets' has an id outside the vocabulary of {V}");
        zs.requires_grad_(true);
        var r = TorchNce.Loss(zs, zNat, zNeg, targets, mask, Num(j, "a", jpath), Num(j, "temperature", jpath));
        r.Loss.backward();
        return [("loss", r.Loss.detach()), ("ce", r.Ce.detach()), ("kd", r.Kd.detach()), ("kl", r.Kl), ("beta", r.Beta), ("dz_s", GradOf(zs, "z_s"))];
    }

    static List<(string, Tensor)> Decode(string dir)
    {
        using var model = LoadModel(dir, Directory.Exists(Path.Combine(dir, "adapter")));
        string dpath = Path.Combine(dir, "decode.safetensors");
        var d = SafeTensorsLite.Read(dpath);
        var prompt = Need(d, "prompt", dpath).to(ScalarType.Int64);
        if (prompt.dim() != 2) throw new InputException($"{dpath}: tensor 'prompt' must be (B,P)");
        long B = prompt.shape[0], P = prompt.shape[1];
        var feed = Need(d, "feed", dpath).to(ScalarType.Int64);
        if (feed.dim() != 2 || feed.shape[0] != B) throw new InputException($"{dpath}: tensor 'feed' must be ({B},K)");
        long K = feed.shape[1];
        foreach (var (name, t) in new[] { ("prompt", prompt), ("feed", feed) })
            if (t.min().item<long>() < 0 || t.max().item<long>() >= model.Config.Vocab) throw new InputException($"{dpath}: tensor '{name}' has an id outside the vocabulary of {model.Config.Vocab}");
        using var cache = model.NewCache((int)B, (int)(P + K));
        var steps = new List<Tensor> { model.Prefill(cache, prompt) };                   // (B,V)
        for (long k = 0; k < K; k++) steps.Add(model.DecodeStep(cache, feed.select(1, k)));
        return [("logits", stack(steps, 0))];
    }
}
