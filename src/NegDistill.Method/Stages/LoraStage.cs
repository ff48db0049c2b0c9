using NegDistill.Data;
using NegDistill.Method.Sources;
using NegDistill.Model;
using NegDistill.Train;

namespace NegDistill.Method.Stages;

/// <summary>A fresh LoRA on the frozen base trained with one loss head on one batch source: step 1.1
/// and the baselines. A subclass says which head and which data.</summary>
public abstract class LoraStage : Stage
{
    /// <summary>The seed stream of the LoRA's initialisation.</summary>
    protected virtual SeedStream Stream => SeedStream.CrossEntropyLora;
    protected abstract ILossHead Head();
    protected abstract IBatchSource Data(StageContext ctx);

    protected override void Train(StageContext ctx)
    {
        using var m = ctx.LoadBase();
        m.AddLora(ctx.Lora, seed: Seeds.Of(ctx.Seed, Stream));
        var trainer = new Trainer(m, Head(), ctx.Loop, ctx.Dir(Name));
        Fit(ctx, Name, trainer, Data(ctx));
        ModelIO.SaveLora(m, ctx.AdapterDir(Name), ctx.Lora, baseModel: ctx.Base.Dir);
    }

    /// <summary>Length-grouped, shuffled batches of <paramref name="pairs"/> for a token-level loss.</summary>
    protected static IBatchSource Tokens(StageContext ctx, IReadOnlyList<Pair> pairs) => new BatchSource(ctx.Batcher, ctx.Batcher.EncodeAll(pairs));

    /// <summary>Batches of D_pos and D_neg with their labels, laid out as <paramref name="layout"/>.</summary>
    protected static IBatchSource Labeled(StageContext ctx, LabeledSource.Layout layout) =>
        new LabeledSource(ctx.Batcher, ctx.Positives, ctx.Negatives, layout, ctx.Loop.MicroBatch, ctx.Seed);
}
