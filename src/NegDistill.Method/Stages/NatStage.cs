using System.Text.Json;
using NegDistill.Model;
using NegDistill.Train;

namespace NegDistill.Method.Stages;

/// <summary>One line of nat/alpha.jsonl: α's mean and spread on one layer's projection after a step.</summary>
public sealed record AlphaRecord(int Step, int Layer, string Proj, double AlphaMean, double AlphaStd);

/// <summary>Step 1.2, Negative Assistant Training: LoRA_neg frozen; LoRA_pos and the integration units
/// trained on D_pos with cross-entropy. Writes α's mean and spread per layer to alpha.jsonl at every
/// step, and the folder as <see cref="AdapterFolder.SaveNat"/> does (it names its LoRA_neg).</summary>
public sealed class NatStage : Stage
{
    public const string AlphaLog = "alpha.jsonl";

    public override string Name => "nat";
    public override string Summary => "step 1.2: NAT, LoRA_neg frozen; LoRA_pos + integration unit on D_pos";
    public override int Order => 2;
    public override IReadOnlyList<string> Requires => ["neg"];
    public override TrainingStage PlanKind => TrainingStage.Nat;

    protected override void Train(StageContext ctx)
    {
        using var m = ctx.LoadBase();
        NatAdapter.AttachFromPeft(m, ctx.AdapterDir("neg"), ctx.Lora, seed: Seeds.Of(ctx.Seed, SeedStream.Nat));
        var tr = new Trainer(m, new CrossEntropyHead(), ctx.Loop, ctx.Dir(Name));
        using var alphaLog = new StreamWriter(Path.Combine(ctx.Dir(Name), AlphaLog), append: true);
        Fit(ctx, Name, tr, new Sources.BatchSource(ctx.Batcher, ctx.Batcher.EncodeAll(ctx.Positives)), s =>
        {
            foreach (var (l, p, mean, std) in NatAdapter.AlphaStatsByModule(m))
                alphaLog.WriteLine(JsonSerializer.Serialize(new AlphaRecord(s.Step, l, p.ToString(), mean, std), MethodJson.Default.AlphaRecord));
            alphaLog.Flush();
        });
        AdapterFolder.SaveNat(m, ctx.AdapterDir(Name), ctx.Lora, ctx.AdapterDir("neg"), baseModel: ctx.Base.Dir);
    }
}
