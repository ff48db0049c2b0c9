using NegDistill.Model;

namespace NegDistill.Method.Stages;

/// <summary>Step 1.1: LoRA_neg, next-token cross-entropy on D_neg only.</summary>
public sealed class NegStage() : LoraStage("neg", "step 1.1: LoRA_neg, cross-entropy on D_neg", 1, DataNeeds.Negatives, () => new CrossEntropyHead(), ctx => Tokens(ctx, ctx.Negatives));
