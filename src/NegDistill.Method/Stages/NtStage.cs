using NegDistill.Method.Sources;
using NegDistill.Model;
using NegDistill.Train;

namespace NegDistill.Method.Stages;

/// <summary>Baseline NT: cross-entropy on positives, the likelihood of negative tokens pushed down (bounded).</summary>
public sealed class NtStage : LoraStage
{
    public override string Name => "nt";
    public override string Summary => "baseline NT: cross-entropy on D_pos, negative training on D_neg";
    public override int Order => 13;
    protected override SeedStream Stream => SeedStream.NegativeAwareLora;
    protected override ILossHead Head() => new PolarityHead(NegativeObjective.NegativeTraining);
    protected override IBatchSource Data(StageContext ctx) => Labeled(ctx, LabeledSource.Layout.Mixed);
}
