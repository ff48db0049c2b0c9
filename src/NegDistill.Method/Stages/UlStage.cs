using NegDistill.Model;

namespace NegDistill.Method.Stages;

/// <summary>Baseline UL: cross-entropy on positives, unlikelihood −log(1 − p(y)) on every token of a negative.</summary>
public sealed class UlStage() : LoraStage("ul", "baseline UL: cross-entropy on D_pos, unlikelihood on D_neg", 12, DataNeeds.Positives | DataNeeds.Negatives,
    () => new PolarityHead(NegativeObjective.Unlikelihood), ctx => Labeled(ctx, Sources.LabeledSource.Layout.Mixed), SeedStream.NegativeAwareLora);
