using System.CommandLine;
using NegDistill.Method;
using NegDistill.Method.Settings;
using NegDistill.Model;
using NegDistill.Runtime;

namespace NegDistill.Cli;

/// <summary>`negdistill plan`: the memory plan of a training stage or of sampling, before anything is
/// allocated; exit 3 when it does not fit the given device memory.</summary>
static class PlanVerb
{
    sealed record PlanSettings
    {
        public string Preset { get; init; } = "llama-7b";
        public string Stage { get; init; } = "lora";
        public int Batch { get; init; } = 16;
        public int Seq { get; init; } = 256;
        public string Weights { get; init; } = "bf16";
        public bool Recompute { get; init; }
        public int Questions { get; init; } = 32;
        public int N { get; init; } = 16;
        public int Slots { get; init; }
        public string KvCache { get; init; } = "bf16";
        public int MaxNew { get; init; } = 256;
        public bool SharePrompt { get; init; } = true;
        public double DeviceGb { get; init; } = 80;

        public static class Keys
        {
            public static readonly SettingInfo Preset = new("--preset", null, "model shape: " + string.Join(", ", LlamaConfig.PresetNames));
            public static readonly SettingInfo Stage = new("--stage", null, "lora (neg, kd, mix, ul, nt, cl, rank), nat, nce, or sample");
            public static readonly SettingInfo Batch = new("--batch", null, "training micro-batch (sequences)");
            public static readonly SettingInfo Seq = new("--seq", null, "training tokens per sequence; sampling positions per sequence (prompt + new tokens)");
            public static readonly SettingInfo Weights = new("--weights", null, "frozen weight storage: bf16, f16, f32");
            public static readonly SettingInfo Recompute = new("--recompute", null, "keep one layer's activations and recompute the rest in backward");
            public static readonly SettingInfo Questions = new("--questions", null, "sample: questions");
            public static readonly SettingInfo N = new("--n", null, "sample: candidates per question");
            public static readonly SettingInfo Slots = new("--slots", null, "sample: KV-cache slots (0: the most that fit, up to questions × n and 256)");
            public static readonly SettingInfo KvCache = new("--kv-cache", null, "sample: KV-cache element type f32, bf16 (what a GPU run picks) or f16");
            public static readonly SettingInfo MaxNew = new("--max-new", null, "sample: new tokens per candidate (the prompt is --seq less this)");
            public static readonly SettingInfo SharePrompt = new("--share-prompt", null, "sample: the n candidates of a question read one copy of its prompt (false: each holds its own)");
            public static readonly SettingInfo DeviceGb = new("--device-gb", null, "device memory to check the plan against (GB)");
        }

        public void Check(SettingsCheck c)
        {
            c.Require(LlamaConfig.PresetNames.Contains(Preset), Keys.Preset, $"'{Preset}' is not {string.Join(", ", LlamaConfig.PresetNames)}");
            c.Require(Stage is "lora" or "nat" or "nce" or "sample", Keys.Stage, $"'{Stage}' is not lora, nat, nce or sample");
            c.Positive(Batch, Keys.Batch);
            c.Positive(Seq, Keys.Seq);
            c.Require(Weights is "bf16" or "f16" or "f32", Keys.Weights, $"'{Weights}' is not bf16, f16 or f32");
            c.Positive(Questions, Keys.Questions);
            c.Positive(N, Keys.N);
            c.NonNegative(Slots, Keys.Slots, "the most that fit");
            c.Require(KvCache is "f32" or "bf16" or "f16", Keys.KvCache, $"'{KvCache}' is not f32, bf16 or f16");
            c.Require(MaxNew > 0 && MaxNew < Seq, Keys.MaxNew, $"must be positive and below --seq {Seq} (got {MaxNew})");
            c.Positive(DeviceGb, Keys.DeviceGb);
        }
    }

    public static Command Build()
    {
        var cmd = new Command("plan", "Print the memory plan of a training run (LoRA, NAT or NCE stage) or of sampling, before anything is allocated; exit 3 when it does not fit.");
        var b = new Bound<PlanSettings>(new PlanSettings());
        b.Add(cmd, PlanSettings.Keys.Preset, s => s.Preset, (s, v) => s with { Preset = v });
        b.Add(cmd, PlanSettings.Keys.Stage, s => s.Stage, (s, v) => s with { Stage = v });
        b.Add(cmd, PlanSettings.Keys.Batch, s => s.Batch, (s, v) => s with { Batch = v });
        b.Add(cmd, PlanSettings.Keys.Seq, s => s.Seq, (s, v) => s with { Seq = v });
        b.Add(cmd, PlanSettings.Keys.Weights, s => s.Weights, (s, v) => s with { Weights = v });
        b.Add(cmd, PlanSettings.Keys.Recompute, s => s.Recompute, (s, v) => s with { Recompute = v });
        b.Add(cmd, PlanSettings.Keys.Questions, s => s.Questions, (s, v) => s with { Questions = v });
        b.Add(cmd, PlanSettings.Keys.N, s => s.N, (s, v) => s with { N = v });
        b.Add(cmd, PlanSettings.Keys.Slots, s => s.Slots, (s, v) => s with { Slots = v });
        b.Add(cmd, PlanSettings.Keys.KvCache, s => s.KvCache, (s, v) => s with { KvCache = v });
        b.Add(cmd, PlanSettings.Keys.MaxNew, s => s.MaxNew, (s, v) => s with { MaxNew = v });
        b.Add(cmd, PlanSettings.Keys.SharePrompt, s => s.SharePrompt, (s, v) => s with { SharePrompt = v });
        b.Add(cmd, PlanSettings.Keys.DeviceGb, s => s.DeviceGb, (s, v) => s with { DeviceGb = v });
        cmd.SetAction(r => Cli.Guarded(_ => Run(b.Bind(r), Cli.Console)));
        return cmd;
    }

    static int Run(PlanSettings p, IReporter report)
    {
        var check = new SettingsCheck(SettingSource.CommandLine);
        p.Check(check);
        check.ThrowIfAny();
        var dt = p.Weights switch { "bf16" => DType.BF16, "f16" => DType.F16, _ => DType.F32 };
        var cfg = LlamaConfig.Preset(p.Preset);
        var lora = new LoraConfig();
        long device = (long)(p.DeviceGb * 1e9);
        MemoryPlan plan;
        string title;
        if (p.Stage == "sample")
        {
            int seqs = p.Questions * p.N;
            var cache = EvalSettings.CacheType(p.KvCache)!.Value;
            CacheShape ShapeFor(int s) => p.SharePrompt && p.N > 1
                ? CacheShape.Shared(s, p.Seq, cache, p.N, p.Questions, p.Seq - p.MaxNew, p.MaxNew)
                : CacheShape.For(s, p.Seq, cache);
            int slots = p.Slots > 0 ? p.Slots : Planning.FitSlots(cfg, dt, lora, Math.Min(seqs, 256), ShapeFor, device);
            var shape = ShapeFor(slots);
            plan = Planning.Plan(cfg, dt, lora, shape);
            title = $"sampling {p.Questions} questions × {p.N} candidates, {p.Preset}, {dt} weights, LoRA {string.Join("/", lora.Targets)} r {lora.Rank}, {shape.Layout}, {cache} KV cache, {shape.Rows} rows per forward";
        }
        else
        {
            var kind = p.Stage switch { "nat" => TrainingStage.Nat, "nce" => TrainingStage.Nce, _ => TrainingStage.Lora };
            plan = MemoryPlan.ForTraining(cfg, dt, lora, p.Batch, p.Seq, p.Recompute, stage: kind, nat: new MemoryPlan.NatPlan(lora, lora));
            title = $"{kind} training, {p.Preset}, {dt} weights, LoRA {string.Join("/", lora.Targets)} r {lora.Rank}, micro-batch {p.Batch} × {p.Seq}";
        }
        foreach (var line in plan.Render(title, device).TrimEnd('\n').Split('\n')) report.Line(line);
        if (plan.Total <= device) return ExitCodes.Ok;
        Console.Error.WriteLine(p.Stage == "sample" ? "does not fit: lower --slots, --seq or --n" : "does not fit: lower --batch or --seq, or add --recompute");
        return ExitCodes.DoesNotFit;
    }
}
