using NegDistill.Method.Settings;
using NegDistill.Model;
using NegDistill.Train;

namespace NegDistill.Method;

/// <summary>
/// The one runner of `train`, `pipeline` and `demo`: the stages in order on one context (one backend,
/// one split). Before any stage trains, every stage's prerequisites are checked and, unless the
/// context says otherwise, every memory plan is printed and checked against the device, so a run that
/// cannot finish is refused before it starts. Complete stages are skipped; an interrupted one resumes
/// from its checkpoint on the next run.
/// </summary>
public static class Pipeline
{
    /// <summary>`negdistill train`: the settings checked as typed on the command line, one context, the stages.</summary>
    public static void Train(RunSettings run, TrainSettings train, LoraSettings lora, DeviceSettings device, IReporter report, CancellationToken cancel)
    {
        var check = new SettingsCheck(SettingSource.CommandLine);
        var stages = run.Check(check);
        device.Check(check);
        train.Check(check);
        lora.Check(check);
        foreach (var s in stages) s.Check(train, check);
        check.ThrowIfAny();
        RequireWritable(run.Out, RunSettings.Keys.Out, SettingSource.CommandLine);
        using var ctx = StageContext.Open(run, train, lora, device, SettingSource.CommandLine, report, cancel);
        Run(ctx, stages);
        foreach (var l in ctx.Log) report.Line(l);
        foreach (var s in stages)
            report.Line($"{s.Name}: adapter in {ctx.AdapterDir(s.Name)}; metrics in {Path.Combine(ctx.Dir(s.Name), Trainer.MetricsFile)}");
    }

    /// <summary>`negdistill pipeline CONFIG.json`: the config checked completely, every stage in order on one
    /// context, then the evaluation on the same backend. Returns the evaluation's Markdown (null without one).</summary>
    public static string? FromConfig(string configPath, IReporter report, CancellationToken cancel)
    {
        var (c, stages) = PipelineConfig.Load(configPath);
        RequireWritable(c.Out, RunSettings.Keys.Out, SettingSource.Config);
        using var ctx = StageContext.Open(c.Run, c.Train, c.Lora, c.DeviceSettings, SettingSource.Config, report, cancel);
        Run(ctx, stages);
        foreach (var l in ctx.Log) report.Line(l);
        if (c.Eval is not { } eval) return null;
        report.Line("== eval");
        var rank = StageCatalog.Find("rank")!;
        var job = new EvalJob
        {
            Ops = ctx.Ops, Base = ctx.Base, Student = eval.Student == "base" ? null : StageCatalog.Find(eval.Student)!.Result(ctx),
            Ranker = rank.IsComplete(ctx) ? rank.Result(ctx) : null, Settings = eval, OutDir = Path.Combine(c.Out, "eval"), Seed = c.Seed,
            DeviceBytes = ctx.DeviceBytes, Report = report, Source = SettingSource.Config,
        };
        var (sampled, md) = Evaluation.Evaluate(job, TestSet.Load(eval.AnswerTask, eval.Data!, eval.Limit));
        foreach (var l in sampled.Log) report.Line(l);
        report.Line(md);
        report.Line($"candidates, table and plot under {job.OutDir}");
        return md;
    }

    public static void Run(StageContext ctx, IReadOnlyList<Stage> stages)
    {
        for (int i = 0; i < stages.Count; i++)
            foreach (var need in stages[i].Requires)
                if (!stages.Take(i).Any(s => s.Name == need) && StageCatalog.Find(need) is { } n && !n.IsComplete(ctx))
                    throw new ArgumentException($"stage '{stages[i].Name}' needs '{need}', which has no adapter in {ctx.AdapterDir(need)}: run `negdistill train {need}` with the same output folder first");
        foreach (var s in stages.Where(s => !s.IsComplete(ctx)))
            if (MissingData(ctx, s.Needs) is { } missing)
                throw new InvalidDataException($"stage '{s.Name}' trains on {missing}, and the split of {ctx.TeacherData ?? "the teacher data"} has none "
                    + $"({ctx.Positives.Count} positive and {ctx.Negatives.Count} negative pairs; see the split's table above for malformed lines and pairs dropped for length)");
        if (ctx.CheckPlans)
            for (int i = 0; i < stages.Count; i++)
                if (!stages[i].IsComplete(ctx)) CheckPlan(ctx, stages[i]);
        foreach (var s in stages)
        {
            if (stages.Count > 1) ctx.Report.Line($"== stage {s.Name}");
            s.Run(ctx);
        }
    }

    /// <summary>The output folder, created, must take a file: refused up front (naming the option or field)
    /// rather than when the first checkpoint is written.</summary>
    public static void RequireWritable(string dir, SettingInfo key, SettingSource source)
    {
        try
        {
            Directory.CreateDirectory(dir);
            string probe = Path.Combine(dir, $".negdistill-write-test-{Environment.ProcessId}");
            File.WriteAllText(probe, "");
            File.Delete(probe);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"{key.NameIn(source)} {dir}: cannot write there ({e.Message})", e);
        }
    }

    static string? MissingData(StageContext ctx, DataNeeds needs)
    {
        if (needs.HasFlag(DataNeeds.Positives) && ctx.Positives.Count == 0) return "D_pos (the rationales the checker accepts)";
        if (needs.HasFlag(DataNeeds.Negatives) && ctx.Negatives.Count == 0) return "D_neg (the rationales the checker rejects)";
        if (needs.HasFlag(DataNeeds.Either) && ctx.Positives.Count + ctx.Negatives.Count == 0) return "D_pos ∪ D_neg";
        return null;
    }

    /// <summary>The LoRA settings of a stage another one reads: those its folder was written with when it
    /// is complete, else this run's (it trains earlier in the same run).</summary>
    static LoraConfig SettingsOf(StageContext ctx, string stage) =>
        StageCatalog.Find(stage)!.IsComplete(ctx) ? ModelIO.ReadLoraSettings(ctx.AdapterDir(stage)) : ctx.Lora;

    static void CheckPlan(StageContext ctx, Stage stage)
    {
        var kind = stage.PlanKind;
        MemoryPlan.NatPlan? nat = kind switch
        {
            TrainingStage.Nat => new MemoryPlan.NatPlan(SettingsOf(ctx, "neg"), ctx.Lora),
            TrainingStage.Nce => new MemoryPlan.NatPlan(SettingsOf(ctx, "neg"), SettingsOf(ctx, "nat")),
            _ => null,
        };
        var train = ctx.Loop;
        int cutoff = ctx.Batcher.Options.CutoffLength;
        var plan = MemoryPlan.ForTraining(ctx.Config, ctx.Base.Weights, ctx.Lora, train.MicroBatch, cutoff, ctx.Recompute, stage: kind, nat: nat);
        string Name(SettingInfo s) => s.NameIn(ctx.Source);
        Planning.Check(ctx.Report, ctx.Ops, plan,
            $"{stage.Name}: {(kind == TrainingStage.Lora ? "LoRA" : kind)} training, {ctx.Base.Weights} weights, micro-batch {train.MicroBatch} × {cutoff} tokens{(ctx.Recompute ? ", recomputing activations" : "")}"
            + (kind == TrainingStage.Nce ? " (self-augmentation's sampling runs before, with less)" : ""),
            $"{Name(TrainSettings.Keys.MicroBatch)} (gradient accumulation keeps {Name(TrainSettings.Keys.EffectiveBatch)}) or {Name(TrainSettings.Keys.Cutoff)}"
            + (ctx.Recompute ? "" : $", or set {Name(TrainSettings.Keys.Recompute)}"),
            ctx.DeviceBytes);
    }
}
