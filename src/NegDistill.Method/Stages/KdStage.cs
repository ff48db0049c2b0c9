using NegDistill.Model;

namespace NegDistill.Method.Stages;

/// <summary>Baseline CoT KD: a LoRA with cross-entropy on D_pos.</summary>
public sealed class KdStage() : LoraStage("kd", "baseline CoT KD: LoRA, cross-entropy on D_pos", 10, DataNeeds.Positives, () => new CrossEntropyHead(), ctx => Tokens(ctx, ctx.Positives));
