using System.Text.Json;
using NegDistill.Data;
using NegDistill.Model;
using NegDistill.Train;

namespace NegDistill.Method.Stages;

/// <summary>One line of nce/beta.jsonl: β per sequence of one micro-batch, and its CE and KD terms.</summary>
public sealed record BetaRecord(long Call, double[] Beta, double Ce, double Kd);

/// <summary>
/// Step 2, Negative Calibrated Enhancement. Self-augmentation first: the NAT model answers the
/// training questions greedily and the rationales the MATH checker accepts against the teacher file's
/// reference join D_pos. Then a fresh student LoRA is distilled from the NAT model with the calibrated
/// loss (method.md step 2): the two teachers (NAT integrated, LoRA_neg alone) run on the student's own
/// model, swapped in with <see cref="LlamaModel.WithAdapters"/>, so the base weights exist once.
/// β per sequence goes to beta.jsonl. The ablation with β = 0 is this stage with one setting changed
/// (<see cref="NceBeta0Stage"/>); both read the same self-augmentation (<see cref="AugmentFile"/>).
/// </summary>
public class NceStage : Stage
{
    public const string BetaLog = "beta.jsonl";
    /// <summary>The self-augmented positives, kept in the NAT stage's folder with the hash of the NAT weights they came from.</summary>
    public const string AugmentFile = "self_augmented.json";

    readonly string _name, _summary;
    readonly int _order;
    readonly bool _calibrate;

    public NceStage() : this("nce", "step 2: NCE, self-augmentation by the NAT model, then a fresh LoRA distilled with the calibrated loss", 3, calibrate: true) { }

    /// <param name="calibrate">false: β = 0 for every sequence (<see cref="NceHead.Calibrate"/>)</param>
    protected NceStage(string name, string summary, int order, bool calibrate) => (_name, _summary, _order, _calibrate) = (name, summary, order, calibrate);

    public override string Name => _name;
    public override string Summary => _summary;
    public override int Order => _order;
    public override IReadOnlyList<string> Requires => ["neg", "nat"];
    public override TrainingStage PlanKind => TrainingStage.Nce;

    static readonly NatStage Nat = new();

    protected override void Train(StageContext ctx) => Distil(ctx, SelfAugment(ctx));

    /// <summary>D_pos with the NAT model's correct greedy answers to up to ctx.AugmentQuestions training
    /// questions (KV-cache decoder, ctx.AugmentMaxNewTokens each). Read back from <see cref="AugmentFile"/> when
    /// it was written for the same NAT weights and settings.</summary>
    public static IReadOnlyList<Pair> SelfAugment(StageContext ctx)
    {
        string file = Path.Combine(ctx.Dir(Nat.Name), AugmentFile);
        string natHash = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(Path.Combine(ctx.AdapterDir(Nat.Name), Checkpoints.AdapterCheckpoint.WeightsFileName))));
        if (File.Exists(file) && JsonSerializer.Deserialize(File.ReadAllText(file), MethodJson.Default.SelfAugmentation) is { } kept
            && kept.NatWeightsSha256 == natHash && kept.QuestionLimit == ctx.AugmentQuestions && kept.MaxNewTokens == ctx.AugmentMaxNewTokens)
        {
            ctx.Log.Add($"self-augmentation (read back from {file}): {kept.Answered} training questions answered by the NAT model; {kept.Added.Count} correct rationales joined D_pos ({ctx.Positives.Count} → {ctx.Positives.Count + kept.Added.Count})");
            return ctx.Positives.Concat(kept.Added.Select(a => new Pair(a.Question, a.Rationale, a.Subject, a.Level, true, a.SourceId))).ToList();
        }
        var gold = new Dictionary<string, string>();
        if (ctx.TeacherData != null)
            foreach (var r in new TeacherDataLoader(MalformedPolicy.Skip).Load(ctx.TeacherData)) gold[r.Question] = r.Answer;
        var questions = ctx.Positives.Concat(ctx.Negatives).GroupBy(p => p.Question).Select(g => g.First()).Take(ctx.AugmentQuestions).ToList();
        using var nat = Nat.Load(ctx);
        var prompts = questions.Select(q => ctx.Tokenizer.Encode(PromptFormat.Prompt(q.Question), true, false)).ToList();
        var outs = Asc.Greedy(nat, ctx.Tokenizer, prompts, ctx.AugmentMaxNewTokens);
        var added = new List<Pair>();
        for (int i = 0; i < questions.Count; i++)
        {
            string text = PromptFormat.Rationale(ctx.Tokenizer.Decode(outs[i].Tokens));
            if (gold.TryGetValue(questions[i].Question, out var reference) && MathChecker.IsCorrect(text, reference))
                added.Add(questions[i] with { Rationale = text, Positive = true, SourceId = questions[i].SourceId + "#nat" });
        }
        ctx.Log.Add($"self-augmentation: the NAT model answered {questions.Count} training questions (greedy, KV-cache decoder); {added.Count} correct rationales joined D_pos ({ctx.Positives.Count} → {ctx.Positives.Count + added.Count}"
            + (added.Count == 0 ? "" : "; " + string.Join(", ", added.GroupBy(p => p.Level).OrderBy(g => g.Key, StringComparer.Ordinal).Select(g => $"{g.Key} {g.Count()}"))) + ")");
        Checkpoints.AtomicFile.WriteAllText(file, JsonSerializer.Serialize(new SelfAugmentation(natHash, ctx.AugmentQuestions, ctx.AugmentMaxNewTokens, questions.Count,
            added.Select(p => new AugmentedPair(p.Question, p.Rationale, p.Subject, p.Level, p.SourceId)).ToList()), MethodJson.Default.SelfAugmentation));
        return ctx.Positives.Concat(added).ToList();
    }

    /// <summary>
    /// One step of method.md's step 2 on a model whose adapters are the student's: both teachers' final hidden
    /// states without gradients (the NAT model with its integration unit, then LoRA_neg alone, by swapping in
    /// <paramref name="teachers"/>, so the base weights exist once), then the student's forward and, when
    /// <paramref name="backward"/>, backward through the calibrated loss. The stage's objective, and what
    /// gpu-check times at LLaMA-7b shape.
    /// </summary>
    public static (double Loss, double[] Beta, double Ce, double Kd) Step(LlamaModel m, IReadOnlyDictionary<(int Layer, Proj Proj), IProjectionAdapter> teachers,
        ModelBatch batch, bool backward, bool training, bool calibrate = true)
    {
        Runtime.Tensor hNat, hNeg;
        using (m.WithAdapters(teachers))
        {
            NatAdapter.SetMode(m, NatMode.Integrated);
            hNat = TeacherHidden.Capture(m, batch);
            NatAdapter.SetMode(m, NatMode.NegOnly);
            hNeg = calibrate ? TeacherHidden.Capture(m, batch) : hNat;           // β = 0 never reads the negative view
        }
        using (hNat)
        using (calibrate ? hNeg : null)
        using (var head = new NceHead(hNat, hNeg, calibrate: calibrate))
        {
            double loss = m.Step(batch, head, backward, training);
            return (loss, head.Beta.ToArray(), head.LastCe, head.LastKd);
        }
    }

    /// <summary>The calibrated distillation on <paramref name="positives"/>.</summary>
    public void Distil(StageContext ctx, IReadOnlyList<Pair> positives)
    {
        using var m = Nat.Load(ctx);
        var teacherSet = m.DetachAdapters();
        try
        {
            var students = m.AddLora(ctx.Lora, seed: Seeds.Of(ctx.Seed, SeedStream.NceStudent));
            using var betaLog = new StreamWriter(Path.Combine(Directory.CreateDirectory(ctx.Dir(Name)).FullName, BetaLog), append: true);
            long calls = 0;
            double Objective(ModelBatch batch, bool backward, bool training)
            {
                var (loss, beta, ce, kd) = Step(m, teacherSet, batch, backward, training, _calibrate);
                if (backward)
                {
                    betaLog.WriteLine(JsonSerializer.Serialize(new BetaRecord(calls++, beta, ce, kd), MethodJson.Default.BetaRecord));
                    betaLog.Flush();
                }
                return loss;
            }
            var tr = new Trainer(m, Objective, ctx.Loop, ctx.Dir(Name), students.SelectMany(s => s.Parameters));
            Fit(ctx, Name, tr, new Sources.BatchSource(ctx.Batcher, ctx.Batcher.EncodeAll(positives)));
            ModelIO.SaveLora(m, ctx.AdapterDir(Name), ctx.Lora, baseModel: ctx.Base.Dir);
        }
        finally
        {
            foreach (var a in teacherSet.Values) a.Dispose();   // detached: the model disposes only the student's
        }
    }
}

/// <summary>What self-augmentation added, for the NAT weights it ran on (<see cref="NceStage.AugmentFile"/>).</summary>
public sealed record SelfAugmentation(string NatWeightsSha256, int QuestionLimit, int MaxNewTokens, int Answered, List<AugmentedPair> Added);

/// <summary>One self-augmented positive: a training question and the NAT model's correct rationale.</summary>
public sealed record AugmentedPair(string Question, string Rationale, string Subject, string Level, string SourceId);

/// <summary>Ablation "NCE with β = 0": the same distillation from the NAT model at a constant weight 0.5
/// per sequence (plain knowledge distillation, no calibration by LoRA_neg).</summary>
public sealed class NceBeta0Stage() : NceStage("nce-beta0", "ablation: NCE with β = 0 (plain distillation from the NAT model, no calibration)", 7, calibrate: false);
