using NegDistill.Model;
using NegDistill.Train;

namespace NegDistill.Method.Stages;

/// <summary>Baseline MIX: a LoRA with cross-entropy on D_pos ∪ D_neg.</summary>
public sealed class MixStage : LoraStage
{
    public override string Name => "mix";
    public override string Summary => "baseline MIX: LoRA, cross-entropy on D_pos ∪ D_neg";
    public override int Order => 11;
    protected override ILossHead Head() => new CrossEntropyHead();
    protected override IBatchSource Data(StageContext ctx) => Tokens(ctx, ctx.Positives.Concat(ctx.Negatives).ToList());
}
