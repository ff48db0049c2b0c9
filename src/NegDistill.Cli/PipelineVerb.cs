using System.Text.Json;
using System.Text.Json.Serialization;

namespace NegDistill.Cli;

/// <summary>
/// `negdistill pipeline CONFIG.json`: every stage in order from one config file, validated before any
/// work starts (every error names the field); a stage whose adapter folder is complete is skipped, so a
/// rerun after an interruption continues where it stopped.
/// </summary>
sealed record PipelineConfig
{
    [JsonPropertyName("base")] public string? Base { get; init; }
    [JsonPropertyName("teacher_data")] public string? TeacherData { get; init; }
    [JsonPropertyName("out")] public string Out { get; init; } = "runs/pipeline";
    [JsonPropertyName("device")] public string Device { get; init; } = "cpu";
    [JsonPropertyName("seed")] public ulong Seed { get; init; } = 1;
    [JsonPropertyName("stages")] public string[] Stages { get; init; } = ["neg", "nat", "nce", "rank"];
    [JsonPropertyName("train")] public TrainSection Train { get; init; } = new();
    [JsonPropertyName("lora")] public LoraSection Lora { get; init; } = new();
    [JsonPropertyName("eval")] public EvalSection? Eval { get; init; }

    public sealed record TrainSection
    {
        [JsonPropertyName("steps")] public int Steps { get; init; } = 1000;
        [JsonPropertyName("micro_batch")] public int MicroBatch { get; init; } = 4;
        [JsonPropertyName("effective_batch")] public int EffectiveBatch { get; init; } = 128;
        [JsonPropertyName("lr")] public float Lr { get; init; } = 3e-4f;
        [JsonPropertyName("warmup_steps")] public int Warmup { get; init; } = 20;
        [JsonPropertyName("cutoff")] public int Cutoff { get; init; } = 256;
        [JsonPropertyName("checkpoint_every")] public int CheckpointEvery { get; init; } = 50;
        [JsonPropertyName("recompute")] public bool Recompute { get; init; }
        [JsonPropertyName("augment_questions")] public int AugmentQuestions { get; init; } = int.MaxValue;
        [JsonPropertyName("augment_max_new_tokens")] public int AugmentMaxNew { get; init; } = 256;
    }

    public sealed record LoraSection
    {
        [JsonPropertyName("r")] public int R { get; init; } = 8;
        [JsonPropertyName("alpha")] public float Alpha { get; init; } = 16;
        [JsonPropertyName("dropout")] public float Dropout { get; init; } = 0.05f;
        [JsonPropertyName("target_modules")] public string[] Targets { get; init; } = ["q_proj", "v_proj"];
    }

    public sealed record EvalSection
    {
        [JsonPropertyName("data")] public string? Data { get; init; }
        [JsonPropertyName("task")] public string Task { get; init; } = "math";
        [JsonPropertyName("student")] public string Student { get; init; } = "nce";
        [JsonPropertyName("n")] public int N { get; init; } = 16;
        [JsonPropertyName("max_new_tokens")] public int MaxNew { get; init; } = 256;
        [JsonPropertyName("temperature")] public float Temperature { get; init; } = 0.7f;
        [JsonPropertyName("limit")] public int Limit { get; init; }
        [JsonPropertyName("slots")] public int Slots { get; init; }
    }

    static readonly JsonSerializerOptions Json = new() { UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow, ReadCommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true };

    public static PipelineConfig Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: no such config file", path);
        PipelineConfig? c;
        try { c = JsonSerializer.Deserialize<PipelineConfig>(File.ReadAllText(path), Json); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: {e.Message} (field {e.Path ?? "?"}, line {e.LineNumber + 1})"); }
        if (c == null) throw new InvalidDataException($"{path}: empty config");
        c.Validate(path);
        return c;
    }

    /// <summary>Every problem is reported with its field; nothing runs unless all pass.</summary>
    public void Validate(string path)
    {
        var errors = new List<string>();
        void Need(bool ok, string field, string why) { if (!ok) errors.Add($"{field}: {why}"); }
        Need(!string.IsNullOrEmpty(Base), "base", "required: a Hugging Face LLaMA checkpoint folder");
        Need(Base == null || File.Exists(Path.Combine(Base, "config.json")), "base", $"'{Base}' has no config.json");
        Need(!string.IsNullOrEmpty(TeacherData), "teacher_data", "required: the authors' teacher JSONL (file, folder or glob)");
        Need(Stages.Length > 0, "stages", "at least one stage");
        foreach (var s in Stages) Need(TrainVerb.StagesList.Contains(s), "stages", $"unknown stage '{s}' ({string.Join(", ", TrainVerb.StagesList)})");
        int Ix(string s) => Array.IndexOf(Stages, s);
        Need(Ix("nat") < 0 || (Ix("neg") >= 0 && Ix("neg") < Ix("nat")), "stages", "nat needs neg before it");
        Need(Ix("nce") < 0 || (Ix("nat") >= 0 && Ix("nat") < Ix("nce")), "stages", "nce needs nat before it");
        Need(Train.Steps > 0, "train.steps", "must be positive");
        Need(Train.MicroBatch > 0, "train.micro_batch", "must be positive");
        Need(Train.EffectiveBatch >= Train.MicroBatch && Train.MicroBatch > 0 && Train.EffectiveBatch % Train.MicroBatch == 0, "train.effective_batch", "must be a positive multiple of train.micro_batch");
        Need(Train.Lr > 0, "train.lr", "must be positive");
        Need(Train.Cutoff >= 8, "train.cutoff", "must be at least 8 tokens");
        Need(Lora.R > 0, "lora.r", "must be positive");
        Need(Lora.Dropout is >= 0 and < 1, "lora.dropout", "must be in [0, 1)");
        foreach (var t in Lora.Targets) Need(Enum.TryParse<Model.Proj>(t, out _), "lora.target_modules", $"unknown module '{t}'");
        if (Eval != null)
        {
            Need(!string.IsNullOrEmpty(Eval.Data), "eval.data", "required when eval is present");
            Need(Eval.Task is "math" or "gsm8k", "eval.task", "math or gsm8k");
            Need(Eval.Student == "base" || Stages.Contains(Eval.Student), "eval.student", $"'{Eval.Student}' is not one of the stages run");
            Need(Eval.N > 0, "eval.n", "must be positive");
            Need(Eval.MaxNew > 0, "eval.max_new_tokens", "must be positive");
            Need(Eval.Slots >= 0, "eval.slots", "must be 0 (the most that fit) or positive");
        }
        if (errors.Count > 0) throw new InvalidDataException($"{path}: invalid config\n  " + string.Join("\n  ", errors));
    }
}

static class PipelineVerb
{
    public static int Run(string configPath, CancellationToken cancel)
    {
        var c = PipelineConfig.Load(configPath);
        foreach (var stage in c.Stages)
        {
            Console.WriteLine($"== stage {stage}");
            int rc = TrainVerb.Run(new TrainOptions
            {
                Stage = stage, Base = c.Base!, Data = c.TeacherData!, Out = c.Out, Device = c.Device, Seed = c.Seed,
                Steps = c.Train.Steps, MicroBatch = c.Train.MicroBatch, EffectiveBatch = c.Train.EffectiveBatch, Lr = c.Train.Lr,
                Warmup = c.Train.Warmup, Cutoff = c.Train.Cutoff, CheckpointEvery = c.Train.CheckpointEvery,
                Rank = c.Lora.R, Alpha = c.Lora.Alpha, Dropout = c.Lora.Dropout, Targets = string.Join(",", c.Lora.Targets),
                AugmentQuestions = c.Train.AugmentQuestions, MaxNew = c.Train.AugmentMaxNew, Recompute = c.Train.Recompute,
            }, cancel);
            if (rc != ExitCodes.Ok) return rc;
        }
        if (c.Eval is { } e)
        {
            Console.WriteLine("== eval");
            return Eval.Run(new EvalOptions
            {
                Base = c.Base!, Adapter = e.Student == "base" ? null : Path.Combine(c.Out, e.Student, "adapter"),
                Rank = c.Stages.Contains("rank") ? Path.Combine(c.Out, "rank", "adapter") : null,
                Data = e.Data!, Task = e.Task, N = e.N, MaxNew = e.MaxNew, Temperature = e.Temperature, Limit = e.Limit, Slots = e.Slots,
                Out = Path.Combine(c.Out, "eval"), Device = c.Device, Seed = c.Seed,
            });
        }
        return ExitCodes.Ok;
    }
}
