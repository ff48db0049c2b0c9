using System.Text.Json;
using NegDistill.Model;
using NegDistill.Train;

namespace NegDistill.Method.Stages;

/// <summary>One line of nat/alpha.jsonl: α's mean and spread on one layer's projection after a step.</summary>
public sealed record AlphaRecord(int Step, int Layer, string Proj, double AlphaMean, double AlphaStd);

/// <summary>Step 1.2, Negative Assistant Training: LoRA_neg frozen; LoRA_pos and the integration units
/// trained on D_pos with cross-entropy. Writes α's mean and spread per layer to alpha.jsonl at every
/// step, and the folder as <see cref="AdapterFolder.SaveNat"/> does (it names its LoRA_neg). The paper's
/// two ablations are this stage with one setting changed (<see cref="NatNoNegStage"/>, <see cref="NatFixedAlphaStage"/>).</summary>
public class NatStage : Stage
{
    public const string AlphaLog = "alpha.jsonl";
    /// <summary>The folder under the stage's own where the ablation without LoRA_neg keeps its zero LoRA_neg.</summary>
    public const string ZeroNegative = "zero-neg";

    readonly string _name, _summary;
    readonly int _order;
    readonly bool _negative;
    readonly float? _fixedAlpha;

    public NatStage() : this("nat", "step 1.2: NAT, LoRA_neg frozen; LoRA_pos + integration unit on D_pos", 2, negative: true, fixedAlpha: null) { }

    /// <param name="negative">false: LoRA_neg is a LoRA with B = 0 (h_neg = Wx), the ablation without the negative LoRA</param>
    /// <param name="fixedAlpha">α held at this value instead of the attention's (<see cref="NatOptions.FixedAlpha"/>)</param>
    protected NatStage(string name, string summary, int order, bool negative, float? fixedAlpha) =>
        (_name, _summary, _order, _negative, _fixedAlpha) = (name, summary, order, negative, fixedAlpha);

    public override string Name => _name;
    public override string Summary => _summary;
    public override int Order => _order;
    public override IReadOnlyList<string> Requires => _negative ? ["neg"] : [];
    public override TrainingStage PlanKind => TrainingStage.Nat;

    protected override void Train(StageContext ctx)
    {
        string negDir = _negative ? ctx.AdapterDir("neg") : WriteZeroNegative(ctx);
        using var m = ctx.LoadBase();
        NatAdapter.AttachFromPeft(m, negDir, ctx.Lora, seed: Seeds.Of(ctx.Seed, SeedStream.Nat), new NatOptions { FixedAlpha = _fixedAlpha });
        var tr = new Trainer(m, new CrossEntropyHead(), ctx.Loop, ctx.Dir(Name));
        using var alphaLog = new StreamWriter(Path.Combine(ctx.Dir(Name), AlphaLog), append: true);
        Fit(ctx, Name, tr, new Sources.BatchSource(ctx.Batcher, ctx.Batcher.EncodeAll(ctx.Positives)), s =>
        {
            foreach (var (l, p, mean, std) in NatAdapter.AlphaStatsByModule(m))
                alphaLog.WriteLine(JsonSerializer.Serialize(new AlphaRecord(s.Step, l, p.ToString(), mean, std), MethodJson.Default.AlphaRecord));
            alphaLog.Flush();
        });
        AdapterFolder.SaveNat(m, ctx.AdapterDir(Name), ctx.Lora, negDir, baseModel: ctx.Base.Dir);
    }

    /// <summary>A LoRA_neg that changes nothing (A drawn as usual, B = 0), written once beside the stage's adapter.</summary>
    string WriteZeroNegative(StageContext ctx)
    {
        string dir = Path.Combine(ctx.Dir(Name), ZeroNegative, "adapter");
        if (File.Exists(Path.Combine(dir, Checkpoints.AdapterCheckpoint.ConfigFileName))) return dir;
        using var m = ctx.LoadBase();
        m.AddLora(ctx.Lora, seed: Seeds.Of(ctx.Seed, SeedStream.CrossEntropyLora));
        ModelIO.SaveLora(m, dir, ctx.Lora, baseModel: ctx.Base.Dir);
        return dir;
    }
}

/// <summary>Ablation "NAT without the negative LoRA": the same training with LoRA_neg = 0, so the unit's
/// second branch sees the frozen model's h = Wx instead of what LoRA_neg learnt from D_neg.</summary>
public sealed class NatNoNegStage() : NatStage("nat-noneg", "ablation: NAT without the negative LoRA (LoRA_neg = 0, h_neg = Wx)", 5, negative: false, fixedAlpha: null);

/// <summary>Ablation "NAT without attention": α fixed at 0.25 (half of β: a constant share of the
/// negative branch; the paper does not give the value) on every token, Q and K unused.</summary>
public sealed class NatFixedAlphaStage() : NatStage("nat-fixed", $"ablation: NAT without attention, α fixed at {Alpha} on every token", 6, negative: true, fixedAlpha: Alpha)
{
    public const float Alpha = 0.25f;
}
