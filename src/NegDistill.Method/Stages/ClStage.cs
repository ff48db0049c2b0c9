using NegDistill.Method.Settings;
using NegDistill.Method.Sources;
using NegDistill.Model;
using NegDistill.Train;

namespace NegDistill.Method.Stages;

/// <summary>Baseline CL: cross-entropy on positives plus a margin between (positive, negative) pairs of
/// the same question; batches are such pairs, so the micro-batch is even.</summary>
public sealed class ClStage : LoraStage
{
    public override string Name => "cl";
    public override string Summary => "baseline CL: cross-entropy on D_pos + contrastive margin over question-matched pairs";
    public override int Order => 14;
    protected override SeedStream Stream => SeedStream.NegativeAwareLora;
    public override void Check(TrainSettings train, SettingsCheck c) =>
        c.Require(train.MicroBatch % 2 == 0, TrainSettings.Keys.MicroBatch, $"cl takes (positive, negative) pairs: the micro-batch must be even (got {train.MicroBatch})");
    protected override ILossHead Head() => new ContrastiveHead();
    protected override IBatchSource Data(StageContext ctx) => Labeled(ctx, LabeledSource.Layout.Pairs);
}
