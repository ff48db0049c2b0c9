using NegDistill.Model;

namespace NegDistill.Method.Stages;

/// <summary>Baseline MIX: a LoRA with cross-entropy on D_pos ∪ D_neg.</summary>
public sealed class MixStage() : LoraStage("mix", "baseline MIX: LoRA, cross-entropy on D_pos ∪ D_neg", 11, DataNeeds.Either, () => new CrossEntropyHead(),
    ctx => Tokens(ctx, ctx.Positives.Concat(ctx.Negatives).ToList()));
