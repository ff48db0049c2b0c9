using NegDistill.Method.Settings;
using NegDistill.Method.Sources;
using NegDistill.Model;
using NegDistill.Train;

namespace NegDistill.Method.Stages;

/// <summary>
/// A fresh LoRA on the frozen base trained with one loss head on one batch source: step 1.1 and the
/// baselines. A subclass is one declaration: its name, summary and order, its head, its data, and the
/// seed stream of its initialisation.
/// </summary>
/// <param name="evenMicroBatch">its batches are (positive, negative) pairs or halves, so the micro-batch must be even</param>
public abstract class LoraStage(string name, string summary, int order, DataNeeds needs, Func<ILossHead> head, Func<StageContext, IBatchSource> data,
    SeedStream stream = SeedStream.CrossEntropyLora, bool evenMicroBatch = false) : Stage
{
    public override string Name => name;
    public override DataNeeds Needs => needs;
    public override string Summary => summary;
    public override int Order => order;

    public override void Check(TrainSettings train, SettingsCheck c) =>
        c.Require(!evenMicroBatch || train.MicroBatch % 2 == 0, TrainSettings.Keys.MicroBatch,
            $"{name} takes (positive, negative) pairs: the micro-batch must be even (got {train.MicroBatch})");

    protected override void Train(StageContext ctx)
    {
        using var m = ctx.LoadBase();
        m.AddLora(ctx.Lora, seed: Seeds.Of(ctx.Seed, stream));
        var trainer = new Trainer(m, head(), ctx.Loop, ctx.Dir(Name));
        Fit(ctx, Name, trainer, data(ctx));
        ModelIO.SaveLora(m, ctx.AdapterDir(Name), ctx.Lora, baseModel: ctx.Base.Dir);
    }

    /// <summary>Length-grouped, shuffled batches of <paramref name="pairs"/> for a token-level loss.</summary>
    protected static IBatchSource Tokens(StageContext ctx, IReadOnlyList<Data.Pair> pairs) => new BatchSource(ctx.Batcher, ctx.Batcher.EncodeAll(pairs));

    /// <summary>Batches of D_pos and D_neg with their labels, laid out as <paramref name="layout"/>.</summary>
    protected static IBatchSource Labeled(StageContext ctx, LabeledSource.Layout layout) =>
        new LabeledSource(ctx.Batcher, ctx.Positives, ctx.Negatives, layout, ctx.Loop.MicroBatch, ctx.Seed);
}
