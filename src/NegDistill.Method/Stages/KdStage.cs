using NegDistill.Model;
using NegDistill.Train;

namespace NegDistill.Method.Stages;

/// <summary>Baseline CoT KD: a LoRA with cross-entropy on D_pos.</summary>
public sealed class KdStage : LoraStage
{
    public override string Name => "kd";
    public override string Summary => "baseline CoT KD: LoRA, cross-entropy on D_pos";
    public override int Order => 10;
    protected override ILossHead Head() => new CrossEntropyHead();
    protected override IBatchSource Data(StageContext ctx) => Tokens(ctx, ctx.Positives);
}
