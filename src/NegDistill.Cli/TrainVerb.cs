using NegDistill.Cli.Pipeline;
using NegDistill.Data;
using NegDistill.Model;
using NegDistill.Train;

namespace NegDistill.Cli;

/// <summary>Settings of `negdistill train STAGE`.</summary>
sealed record TrainOptions
{
    public required string Stage { get; init; }
    public required string Base { get; init; }
    public required string Data { get; init; }
    public string Out { get; init; } = "runs/train";
    public string Device { get; init; } = "cpu";
    public int Steps { get; init; } = 1000;
    public int MicroBatch { get; init; } = 4;
    public int EffectiveBatch { get; init; } = 128;
    public float Lr { get; init; } = 3e-4f;
    public int Warmup { get; init; } = 20;
    public int Cutoff { get; init; } = 256;
    public int CheckpointEvery { get; init; } = 50;
    public int Rank { get; init; } = 8;
    public float Alpha { get; init; } = 16;
    public float Dropout { get; init; } = 0.05f;
    public string Targets { get; init; } = "q_proj,v_proj";
    public int AugmentQuestions { get; init; } = int.MaxValue;
    public int MaxNew { get; init; } = 256;
    public ulong Seed { get; init; } = 1;
    /// <summary>Plan against this many GB instead of the device's memory; 0: the device's.</summary>
    public double MemoryLimitGb { get; init; }
    public bool Recompute { get; init; }
}

/// <summary>
/// `negdistill train neg|nat|nce|kd|mix|ul|nt|cl|rank`: one stage or baseline on a base checkpoint and
/// teacher data, into an output folder shared by the stages (nat reads OUT/neg/adapter; nce reads
/// OUT/neg and OUT/nat). Defaults are method.md's: AdamW lr 3e-4, effective batch 128, cut-off 256,
/// LoRA r 8, alpha 16, dropout 0.05 on q_proj and v_proj. Interrupting checkpoints; rerunning resumes.
/// </summary>
static class TrainVerb
{
    public static readonly string[] StagesList = ["neg", "nat", "nce", "kd", "mix", "ul", "nt", "cl", "rank"];

    public static int Run(TrainOptions o, CancellationToken cancel)
    {
        string stage = o.Stage.ToLowerInvariant();
        if (!StagesList.Contains(stage)) throw new ArgumentException($"unknown stage '{o.Stage}' ({string.Join(", ", StagesList)})");
        var cfg = ModelIO.ReadConfig(o.Base);
        if (cfg.MaxSeq < o.Cutoff) cfg = cfg with { MaxSeq = o.Cutoff };
        var tok = Eval.TokenizerFor(o.Base, cfg);
        var split = new DatasetSplitter().SplitPath(o.Data);
        Console.WriteLine(SplitReport.Render(split.Summary, o.Data));
        using var ops = Backends.Create(o.Device);
        var weights = ModelIO.StorageDType(o.Base);
        var lora = new LoraConfig
        {
            Rank = o.Rank, Alpha = o.Alpha, Dropout = o.Dropout,
            Targets = o.Targets.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(LoraConfig.ParseTarget).ToArray(),
        };
        var (kind, nat) = stage switch
        {
            "nat" => (TrainingStage.Nat, new MemoryPlan.NatPlan(NegConfig(o.Out), lora)),
            "nce" => (TrainingStage.Nce, new MemoryPlan.NatPlan(NegConfig(o.Out), lora)),
            _ => (TrainingStage.Lora, (MemoryPlan.NatPlan?)null),
        };
        Planning.Check(ops, MemoryPlan.ForTraining(cfg, weights, lora, o.MicroBatch, o.Cutoff, o.Recompute, stage: kind, nat: nat),
            $"{stage}: {(kind == TrainingStage.Lora ? "LoRA" : kind)} training, {weights} weights, micro-batch {o.MicroBatch} × {o.Cutoff} tokens{(o.Recompute ? ", recomputing activations" : "")}"
            + (stage == "nce" ? " (self-augmentation's sampling runs before, with less)" : ""),
            "--micro-batch (gradient accumulation keeps --effective-batch) or --cutoff" + (o.Recompute ? "" : ", or add --recompute"),
            o.MemoryLimitGb > 0 ? (long)(o.MemoryLimitGb * 1e9) : null);
        var ctx = new StageContext
        {
            Ops = ops, Config = cfg, BaseDir = o.Base, OutDir = o.Out, Tokenizer = tok, Cancel = cancel,
            Batcher = new Batcher(tok, new BatchingOptions { CutoffLength = o.Cutoff, BatchSize = o.MicroBatch, Seed = o.Seed }),
            Train = new TrainConfig
            {
                Steps = o.Steps, MicroBatch = o.MicroBatch, EffectiveBatch = o.EffectiveBatch, LearningRate = o.Lr,
                WarmupSteps = Math.Min(o.Warmup, o.Steps), CheckpointEvery = o.CheckpointEvery, Seed = o.Seed,
            },
            Lora = lora, Weights = weights, Recompute = o.Recompute,
            Positives = split.Positives, Negatives = split.Negatives,
        };
        ctx.Train.Validate();
        try
        {
            switch (stage)
            {
                case "neg": Stages.LoraCe(ctx, "neg", split.Negatives); break;
                case "kd": Stages.LoraCe(ctx, "kd", split.Positives); break;
                case "mix": Stages.LoraCe(ctx, "mix", split.Positives.Concat(split.Negatives).ToList()); break;
                case "nat": Require(ctx, "neg"); Stages.Nat(ctx); break;
                case "nce":
                    Require(ctx, "neg"); Require(ctx, "nat");
                    Stages.Nce(ctx, Stages.SelfAugment(ctx, o.Data, o.AugmentQuestions, o.MaxNew));
                    break;
                case "ul": Stages.LoraNegativeAware(ctx, "ul", new PolarityHead(NegativeObjective.Unlikelihood), LabeledSource.Layout.Mixed); break;
                case "nt": Stages.LoraNegativeAware(ctx, "nt", new PolarityHead(NegativeObjective.NegativeTraining), LabeledSource.Layout.Mixed); break;
                case "cl": Stages.LoraNegativeAware(ctx, "cl", new ContrastiveHead(), LabeledSource.Layout.Pairs); break;
                case "rank":
                    // held-out slice for accuracy/AUC: every 20th pair, never trained on
                    var (trPos, hoPos) = Slice(split.Positives); var (trNeg, hoNeg) = Slice(split.Negatives);
                    (ctx.Positives, ctx.Negatives) = (trPos, trNeg);
                    var (acc, auc) = Stages.Rank(ctx, hoPos, hoNeg);
                    ctx.Log.Add($"ranking model: held-out accuracy {100 * acc:F1} %, AUC {auc:F3} on {hoPos.Count + hoNeg.Count} rationales");
                    break;
            }
        }
        catch (StageInterrupted e) { Console.WriteLine(e.Message); return ExitCodes.Interrupted; }
        foreach (var l in ctx.Log) Console.WriteLine(l);
        Console.WriteLine($"{stage}: adapter in {ctx.AdapterDir(stage)}; metrics in {Path.Combine(ctx.Dir(stage), Trainer.MetricsFile)}");
        return ExitCodes.Ok;
    }

    /// <summary>LoRA_neg's settings from OUT/neg/adapter (NAT and NCE need it to plan).</summary>
    static LoraConfig NegConfig(string outDir)
    {
        string dir = Path.Combine(outDir, "neg", "adapter");
        if (!File.Exists(Path.Combine(dir, Checkpoints.AdapterCheckpoint.ConfigFileName)))
            throw new ArgumentException($"stage 'neg' has no adapter in {dir}: run `negdistill train neg` with the same --out first");
        return ModelIO.ReadLoraSettings(dir);
    }

    static void Require(StageContext ctx, string stage)
    {
        if (!Stages.Done(ctx, stage))
            throw new ArgumentException($"stage '{stage}' has no adapter in {ctx.AdapterDir(stage)}: run `negdistill train {stage}` with the same --out first");
    }

    static (List<Pair> Train, List<Pair> HeldOut) Slice(IReadOnlyList<Pair> all) =>
        (all.Where((_, i) => i % 20 != 19).ToList(), all.Where((_, i) => i % 20 == 19).ToList());
}
