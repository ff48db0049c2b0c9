using NegDistill.Data;
using NegDistill.Method.Settings;
using NegDistill.Method.Sources;
using NegDistill.Model;
using NegDistill.Train;

namespace NegDistill.Method.Stages;

/// <summary>
/// Step 3's ranking model M_rank: the base with a fresh LoRA and a scalar head (mean-pooled, as the authors'
/// T5 ranker, and reading the backbone's mean and min token log-likelihood of the rationale: <see cref="RankHead"/>), binary cross-entropy on balanced batches of D_pos (1) and D_neg (0) made of question-matched
/// (positive, negative) pairs, as the authors' ranker trains (so the micro-batch is even). Reports its accuracy and
/// AUC on held-out rationales it never trained on: by default every 20th pair of each set; the demo
/// gives rationales of problems outside the training data.
/// </summary>
/// <param name="steps">optimiser steps when not the run's (a verifier needs more than a stage: the demo trains it 4× as long)</param>
public sealed class RankStage(RankStage.HeldOut? heldOut, int? steps = null) : Stage
{
    /// <summary>Rationales to report on, and how to call them in the report.</summary>
    public sealed record HeldOut(IReadOnlyList<Pair> Positives, IReadOnlyList<Pair> Negatives, string Words);

    public RankStage() : this(null, null) { }

    public override string Name => "rank";
    public override string Summary => "step 3: M_rank, LoRA + scalar head, BCE on balanced D_pos (1) / D_neg (0)";
    public override int Order => 4;
    public override DataNeeds Needs => DataNeeds.Positives | DataNeeds.Negatives;
    /// <summary>Held-out accuracy and AUC of the last <see cref="Run"/>, and how many rationales they are over.</summary>
    public (double Accuracy, double Auc, int Rationales)? HeldOutResult { get; private set; }
    /// <summary>The held-out rationales' scores and labels of the last <see cref="Run"/> (for intervals).</summary>
    public (float[] Scores, bool[] Positive)? HeldOutScores { get; private set; }

    public override void Check(TrainSettings train, SettingsCheck c) =>
        c.Require(train.MicroBatch % 2 == 0, TrainSettings.Keys.MicroBatch, $"rank trains on balanced batches (half D_pos, half D_neg): the micro-batch must be even (got {train.MicroBatch})");

    (IReadOnlyList<Pair> Pos, IReadOnlyList<Pair> Neg, HeldOut Held) Split(StageContext ctx)
    {
        if (heldOut != null) return (ctx.Positives, ctx.Negatives, heldOut);
        static bool Held(int i) => i % 20 == 19;
        var held = new HeldOut(ctx.Positives.Where((_, i) => Held(i)).ToList(), ctx.Negatives.Where((_, i) => Held(i)).ToList(), "rationales");
        return (ctx.Positives.Where((_, i) => !Held(i)).ToList(), ctx.Negatives.Where((_, i) => !Held(i)).ToList(), held);
    }

    /// <summary>Trains unless complete, then reports held-out accuracy and AUC either way.</summary>
    public override void Run(StageContext ctx)
    {
        Checkpoints.AtomicFile.SweepStale(ctx.AdapterDir(Name));
        var (pos, neg, held) = Split(ctx);
        using var m = ctx.LoadBase();
        m.AddLora(ctx.Lora, seed: Seeds.Of(ctx.Seed, SeedStream.RankLora));
        using var head = new RankHead(ctx.Ops, ctx.Config.Dim, seed: Seeds.Of(ctx.Seed, SeedStream.RankHead), likelihood: true);
        string headFile = Path.Combine(ctx.AdapterDir(Name), RankHead.FileName);
        if (IsComplete(ctx) && File.Exists(headFile))
        {
            m.ClearAdapters();
            ModelIO.LoadLora(m, ctx.AdapterDir(Name));
            head.Load(headFile);
            ctx.Report.Line($"{Name}: complete, skipped");
        }
        else
        {
            var src = new LabeledSource(ctx.Batcher, pos, neg, LabeledSource.Layout.Pairs, ctx.Loop.MicroBatch, ctx.Seed);
            var loop = steps is { } n ? ctx.Loop with { Steps = n, WarmupSteps = Math.Min(ctx.Loop.WarmupSteps, n), CheckpointEvery = Math.Min(ctx.Loop.CheckpointEvery * n / ctx.Loop.Steps, n) } : ctx.Loop;
            Fit(ctx, Name, new Trainer(m, head, loop, ctx.Dir(Name)), src);
            ModelIO.SaveLora(m, ctx.AdapterDir(Name), ctx.Lora, baseModel: ctx.Base.Dir);
            head.Save(headFile);
        }
        var (scores, labels) = Score(ctx, m, head, held.Positives, held.Negatives);
        var (acc, auc) = Measure(scores, labels);
        HeldOutResult = (acc, auc, held.Positives.Count + held.Negatives.Count);
        HeldOutScores = (scores.ToArray(), labels.Select(l => l > 0.5f).ToArray());
        ctx.Log.Add($"ranking model: held-out accuracy {100 * acc:F1} %, AUC {auc:F3} on {held.Positives.Count + held.Negatives.Count} {held.Words}");
    }

    protected override void Train(StageContext ctx) => Run(ctx);

    /// <summary>Accuracy (threshold 0.5) and AUC of the ranking model on labelled pairs.</summary>
    public static (double Accuracy, double Auc) Evaluate(StageContext ctx, LlamaModel m, RankHead head, IReadOnlyList<Pair> pos, IReadOnlyList<Pair> neg)
    {
        var (scores, labels) = Score(ctx, m, head, pos, neg);
        return Measure(scores, labels);
    }

    static (double Accuracy, double Auc) Measure(List<float> scores, List<float> labels) =>
        (scores.Zip(labels).Count(x => (x.First > 0.5f) == (x.Second > 0.5f)) / (double)Math.Max(1, scores.Count), RankHead.Auc(scores, labels));

    /// <summary>The ranking model's scores of labelled pairs (positives first), with their labels.</summary>
    public static (List<float> Scores, List<float> Labels) Score(StageContext ctx, LlamaModel m, RankHead head, IReadOnlyList<Pair> pos, IReadOnlyList<Pair> neg)
    {
        var items = pos.Select(p => (p, 1f)).Concat(neg.Select(p => (p, 0f))).ToList();
        var scores = new List<float>(); var labels = new List<float>();
        for (int i = 0; i < items.Count; i += ctx.Loop.MicroBatch)
        {
            var chunk = items.Skip(i).Take(ctx.Loop.MicroBatch).ToList();
            var b = ctx.Batcher.Collate(chunk.Select(c => ctx.Batcher.Encode(c.p)).ToList());
            scores.AddRange(head.Score(m, new ModelBatch(b.B, b.T, b.Tokens, b.Targets, b.AttentionMask)));
            labels.AddRange(chunk.Select(c => c.Item2));
        }
        return (scores, labels);
    }
}
