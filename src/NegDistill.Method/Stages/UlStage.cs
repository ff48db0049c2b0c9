using NegDistill.Method.Sources;
using NegDistill.Model;
using NegDistill.Train;

namespace NegDistill.Method.Stages;

/// <summary>Baseline UL: cross-entropy on positives, unlikelihood −log(1 − p(y)) on every token of a negative.</summary>
public sealed class UlStage : LoraStage
{
    public override string Name => "ul";
    public override string Summary => "baseline UL: cross-entropy on D_pos, unlikelihood on D_neg";
    public override int Order => 12;
    protected override SeedStream Stream => SeedStream.NegativeAwareLora;
    protected override ILossHead Head() => new PolarityHead(NegativeObjective.Unlikelihood);
    protected override IBatchSource Data(StageContext ctx) => Labeled(ctx, LabeledSource.Layout.Mixed);
}
