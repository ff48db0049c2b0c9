using NegDistill.Model;

namespace NegDistill.Method.Stages;

/// <summary>Baseline NT: cross-entropy on positives, the likelihood of negative tokens pushed down (bounded).</summary>
public sealed class NtStage() : LoraStage("nt", "baseline NT: cross-entropy on D_pos, negative training on D_neg", 13, DataNeeds.Positives | DataNeeds.Negatives,
    () => new PolarityHead(NegativeObjective.NegativeTraining), ctx => Labeled(ctx, Sources.LabeledSource.Layout.Mixed), SeedStream.NegativeAwareLora);
