using System.CommandLine;
using NegDistill.Method;
using NegDistill.Method.Settings;

namespace NegDistill.Cli;

/// <summary>
/// `negdistill train STAGE` and `negdistill pipeline CONFIG.json`: the same settings records, from
/// options or from the config file, checked completely before any work, then <see cref="Pipeline.Run"/>
/// on one context (one backend, one split). The stages share the output folder (nat reads
/// OUT/neg/adapter; nce reads neg and nat). Interrupting checkpoints; rerunning resumes.
/// </summary>
static class TrainVerb
{
    public static Command Build()
    {
        var cmd = new Command("train", "Train one stage or baseline: " + string.Join("; ", StageCatalog.All.Select(s => $"{s.Name} ({s.Summary})"))
            + ". Stages share --out (nat needs neg; nce needs neg and nat). Prints the memory plan first; Ctrl-C checkpoints and rerunning resumes.");
        var stage = new Argument<string>(RunSettings.Keys.Stages.Option!) { Description = string.Join(" | ", StageCatalog.Names) };
        cmd.Arguments.Add(stage);
        var run = new Bound<RunSettings>(new RunSettings());
        run.Add(cmd, RunSettings.Keys.Base, s => s.Base, (s, v) => s with { Base = v }, required: true);
        run.Add(cmd, RunSettings.Keys.TeacherData, s => s.TeacherData, (s, v) => s with { TeacherData = v }, required: true);
        run.Add(cmd, RunSettings.Keys.Out, s => s.Out, (s, v) => s with { Out = v });
        run.Add(cmd, RunSettings.Keys.Seed, s => s.Seed, (s, v) => s with { Seed = v });
        var dev = DeviceOptions(cmd);
        var train = new Bound<TrainSettings>(new TrainSettings());
        train.Add(cmd, TrainSettings.Keys.Steps, s => s.Steps, (s, v) => s with { Steps = v });
        train.Add(cmd, TrainSettings.Keys.MicroBatch, s => s.MicroBatch, (s, v) => s with { MicroBatch = v });
        train.Add(cmd, TrainSettings.Keys.EffectiveBatch, s => s.EffectiveBatch, (s, v) => s with { EffectiveBatch = v });
        train.Add(cmd, TrainSettings.Keys.Lr, s => s.Lr, (s, v) => s with { Lr = v });
        train.Add(cmd, TrainSettings.Keys.WarmupSteps, s => s.WarmupSteps, (s, v) => s with { WarmupSteps = v });
        train.Add(cmd, TrainSettings.Keys.Cutoff, s => s.Cutoff, (s, v) => s with { Cutoff = v });
        train.Add(cmd, TrainSettings.Keys.CheckpointEvery, s => s.CheckpointEvery, (s, v) => s with { CheckpointEvery = v });
        train.Add(cmd, TrainSettings.Keys.Recompute, s => s.Recompute, (s, v) => s with { Recompute = v });
        train.Add(cmd, TrainSettings.Keys.AugmentQuestions, s => s.AugmentQuestions, (s, v) => s with { AugmentQuestions = v });
        train.Add(cmd, TrainSettings.Keys.AugmentMaxNewTokens, s => s.AugmentMaxNewTokens, (s, v) => s with { AugmentMaxNewTokens = v });
        var lora = new Bound<LoraSettings>(new LoraSettings());
        lora.Add(cmd, LoraSettings.Keys.R, s => s.R, (s, v) => s with { R = v });
        lora.Add(cmd, LoraSettings.Keys.Alpha, s => s.Alpha, (s, v) => s with { Alpha = v });
        lora.Add(cmd, LoraSettings.Keys.Dropout, s => s.Dropout, (s, v) => s with { Dropout = v });
        lora.Add(cmd, LoraSettings.Keys.TargetModules, s => string.Join(",", s.TargetModules),
            (s, v) => s with { TargetModules = v.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) });
        cmd.SetAction(r => Cli.Guarded(ct =>
        {
            Pipeline.Train(run.Bind(r) with { Stages = [r.GetValue(stage)!] }, train.Bind(r), lora.Bind(r), dev.Bind(r), Cli.Console, ct);
            return ExitCodes.Ok;
        }));
        return cmd;
    }

    internal static Bound<DeviceSettings> DeviceOptions(Command cmd)
    {
        var dev = new Bound<DeviceSettings>(new DeviceSettings());
        dev.Add(cmd, DeviceSettings.Keys.Device, s => s.Device, (s, v) => s with { Device = v });
        dev.Add(cmd, DeviceSettings.Keys.MemoryLimitGb, s => s.MemoryLimitGb, (s, v) => s with { MemoryLimitGb = v });
        return dev;
    }
}

/// <summary>`negdistill pipeline CONFIG.json`: every stage in order from one config file, checked before
/// any work starts; completed stages are skipped, so a rerun resumes; then the evaluation, on the same
/// backend.</summary>
static class PipelineVerb
{
    public static Command Build()
    {
        var cmd = new Command("pipeline", "Run every stage in order from one JSON config (checked completely first; completed stages are skipped, so a rerun resumes), then the evaluation.");
        var config = new Argument<string>("config") { Description = "pipeline config file (JSON; fields in the README)" };
        cmd.Arguments.Add(config);
        cmd.SetAction(r => Cli.Guarded(ct =>
        {
            Pipeline.FromConfig(r.GetValue(config)!, Cli.Console, ct);
            return ExitCodes.Ok;
        }));
        return cmd;
    }
}
