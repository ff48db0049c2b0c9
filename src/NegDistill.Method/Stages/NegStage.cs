using NegDistill.Model;
using NegDistill.Train;

namespace NegDistill.Method.Stages;

/// <summary>Step 1.1: LoRA_neg, next-token cross-entropy on D_neg only.</summary>
public sealed class NegStage : LoraStage
{
    public override string Name => "neg";
    public override string Summary => "step 1.1: LoRA_neg, cross-entropy on D_neg";
    public override int Order => 1;
    protected override ILossHead Head() => new CrossEntropyHead();
    protected override IBatchSource Data(StageContext ctx) => Tokens(ctx, ctx.Negatives);
}
