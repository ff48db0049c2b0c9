using System.Reflection;
using NegDistill.Checkpoints;
using NegDistill.Method.Settings;
using NegDistill.Model;
using NegDistill.Train;

namespace NegDistill.Method;

/// <summary>
/// One stage of the method or one baseline: its name, the stages it needs, how it trains, and how its
/// result loads. Each is a choice of trainable parameters, data and loss head over the one training
/// loop (<see cref="Trainer"/>). A stage whose OUT/&lt;name&gt;/adapter/adapter_config.json exists is
/// complete and is skipped, so a rerun resumes; a stage stopped mid-way resumes from its checkpoint.
/// A new baseline is one file: a subclass with a parameterless constructor (<see cref="StageCatalog"/>
/// finds it).
/// </summary>
public abstract class Stage
{
    /// <summary>The name in `train NAME`, the config's <c>stages</c> and the output folder.</summary>
    public abstract string Name { get; }
    /// <summary>One line: what the paper calls it and what trains.</summary>
    public abstract string Summary { get; }
    /// <summary>Where it sits in listings: the paper's stages, then the baselines.</summary>
    public abstract int Order { get; }
    /// <summary>Stages whose results this one reads.</summary>
    public virtual IReadOnlyList<string> Requires => [];
    /// <summary>Which sets of the split its training reads (checked non-empty before any stage runs).</summary>
    public virtual DataNeeds Needs => DataNeeds.Positives;
    /// <summary>Which memory plan its training follows.</summary>
    public virtual TrainingStage PlanKind => TrainingStage.Lora;

    /// <summary>Settings this stage needs beyond the shared checks (e.g. an even micro-batch).</summary>
    public virtual void Check(TrainSettings train, SettingsCheck c) { }

    public bool IsComplete(StageContext ctx) => IsCompleteIn(ctx.OutDir);
    public bool IsCompleteIn(string outDir) => File.Exists(Path.Combine(outDir, Name, "adapter", AdapterCheckpoint.ConfigFileName));

    /// <summary>Trains (resuming from the stage's checkpoint) and writes the result to
    /// <c>ctx.AdapterDir(Name)</c>; throws <see cref="StageInterrupted"/> when cancelled.</summary>
    protected abstract void Train(StageContext ctx);

    /// <summary>Trains unless complete.</summary>
    public virtual void Run(StageContext ctx)
    {
        if (IsComplete(ctx)) { ctx.Report.Line($"{Name}: complete, skipped"); return; }
        AtomicFile.SweepStale(ctx.AdapterDir(Name));   // an adapter write the process was killed in
        Train(ctx);
    }

    /// <summary>The stage's result as the folder it wrote.</summary>
    public AdapterFolder Result(StageContext ctx) => AdapterFolder.Inspect(ctx.AdapterDir(Name));

    /// <summary>The trained model, frozen: the base and the stage's adapters as the folder holds them.</summary>
    public LlamaModel Load(StageContext ctx)
    {
        var m = ctx.LoadBase();
        try { Result(ctx).LoadInto(m); }
        catch { m.Dispose(); throw; }
        return m;
    }

    /// <summary>Runs <paramref name="trainer"/> over <paramref name="data"/> with a progress bar; the one
    /// fit loop of every stage (and of the demo's pretraining).</summary>
    public static void Fit(StageContext ctx, string name, Trainer trainer, IBatchSource data, Action<StepMetrics>? onStep = null) =>
        Fit(ctx.Report, name, trainer, data, ctx.Cancel, onStep);

    public static void Fit(IReporter report, string name, Trainer trainer, IBatchSource data, CancellationToken cancel, Action<StepMetrics>? onStep = null)
    {
        trainer.StepDone += m => { report.Progress(name, m.Step, m.TotalSteps, $"loss {m.Loss:F3}  {m.TokensPerSecond:F0} tok/s"); onStep?.Invoke(m); };
        bool done = trainer.Run(data, cancel: cancel);
        report.EndProgress(name);
        if (!done) throw new StageInterrupted(name, trainer.Step);
    }

    public override string ToString() => Name;
}

/// <summary>The parts of the D_pos / D_neg split a stage trains on.</summary>
[Flags]
public enum DataNeeds
{
    Positives = 1,
    Negatives = 2,
    /// <summary>D_pos ∪ D_neg: either may be empty, not both.</summary>
    Either = 4,
}

/// <summary>Ctrl-C stopped a stage after its checkpoint; rerunning the same command resumes. Exit code 130.</summary>
public sealed class StageInterrupted(string stage, int step) : Exception($"{stage}: interrupted at step {step}; rerun the same command to resume")
{
    public string Stage { get; } = stage;
    public int Step { get; } = step;
}

/// <summary>Every stage and baseline of this library, found by reflection (a subclass of
/// <see cref="Stage"/> with a parameterless constructor), in <see cref="Stage.Order"/>.</summary>
public static class StageCatalog
{
    public static IReadOnlyList<Stage> All { get; } = typeof(Stage).Assembly.GetTypes()
        .Where(t => t.IsSubclassOf(typeof(Stage)) && !t.IsAbstract && t.GetConstructor(BindingFlags.Public | BindingFlags.Instance, Type.EmptyTypes) != null)
        .Select(t => (Stage)Activator.CreateInstance(t)!)
        .OrderBy(s => s.Order).ToList();

    public static IReadOnlyList<string> Names => All.Select(s => s.Name).ToList();

    public static Stage? Find(string name) => All.FirstOrDefault(s => s.Name == name);

    /// <summary>The stages named, checked: every name known, none twice, every prerequisite earlier in
    /// the list or complete under <paramref name="outDir"/>.</summary>
    public static IReadOnlyList<Stage> Parse(IReadOnlyList<string> names, string outDir, SettingsCheck c, SettingInfo key)
    {
        var stages = new List<Stage>();
        if (names.Count == 0) c.Fail(key, "at least one stage");
        foreach (var name in names)
        {
            var s = Find(name);
            if (s == null) { c.Fail(key, $"unknown stage '{name}' ({string.Join(", ", Names)})"); continue; }
            if (stages.Contains(s)) { c.Fail(key, $"'{name}' is named twice"); continue; }
            foreach (var need in s.Requires)
                c.Require(stages.Any(x => x.Name == need) || Find(need)!.IsCompleteIn(outDir), key,
                    $"{name} needs {need} before it (earlier in the list, or complete in {Path.Combine(outDir, need, "adapter")}: run `negdistill train {need}` with the same output folder first)");
            stages.Add(s);
        }
        return stages;
    }
}

/// <summary>The random streams of a run, each derived from the run's seed by its own offset (the
/// offsets of the runs the README records; changing one changes every number downstream).</summary>
public enum SeedStream : ulong
{
    /// <summary>A fresh LoRA trained with cross-entropy (neg, kd, mix).</summary>
    CrossEntropyLora = 11,
    /// <summary>The LoRA of the baselines that use negatives (ul, nt, cl).</summary>
    NegativeAwareLora = 13,
    /// <summary>NAT's LoRA_pos and integration units.</summary>
    Nat = 17,
    /// <summary>NCE's fresh student LoRA.</summary>
    NceStudent = 19,
    /// <summary>The ranking model's LoRA, and its scalar head.</summary>
    RankLora = 23,
    RankHead = 29,
}

public static class Seeds
{
    public static ulong Of(ulong runSeed, SeedStream stream) => runSeed + (ulong)stream;
}
