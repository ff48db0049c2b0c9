using NegDistill.Model;

namespace NegDistill.Method.Stages;

/// <summary>Baseline CL: cross-entropy on positives plus a margin between (positive, negative) pairs of
/// the same question; its batches are such pairs.</summary>
public sealed class ClStage() : LoraStage("cl", "baseline CL: cross-entropy on D_pos + contrastive margin over question-matched pairs", 14, DataNeeds.Positives | DataNeeds.Negatives,
    () => new ContrastiveHead(), ctx => Labeled(ctx, Sources.LabeledSource.Layout.Pairs), SeedStream.NegativeAwareLora, evenMicroBatch: true);
