using NegDistill.Data.Evaluation;

namespace NegDistill.Data.Tests.Evaluation;

/// <summary>The evaluation table: per-subject accuracy, the subject average, supported N, and the Markdown text.</summary>
public class EvaluatorTests
{
    // Three MATH questions, two in algebra and one in counting & probability, 4 candidates each.
    private static readonly EvalQuestion[] MathQuestions =
    [
        new("q1", "Algebra", "2"),
        new("q2", "algebra", "5"),
        new("q3", "Counting & Probability", "\\frac{1}{2}"),
    ];

    private static Candidate M(string q, int index, string? answer, double logProb, int tokens, double? rank)
    {
        string reference = MathQuestions.Single(x => x.QuestionId == q).ReferenceAnswer!;
        string text = answer is null ? "I do not know." : "So the answer is $\\boxed{" + answer + "}$.";
        return Candidate.FromText(AnswerTask.Math, q, "subject", index, text, reference, logProb, tokens, rank);
    }

    /// <summary>
    /// Hand-worked, credit per question for N = 1, 2, 4:
    /// q1 (ref 2), answers [2, 3, 3, 2]:
    ///   SC 1, ½ (2|3), ½ (2:2, 3:2).
    ///   WS w = [e^-0.1, e^-1, e^-1, e^-2]: 1, 1 (.905 > .368), 1 (1.040 > .736).
    ///   ASC [.9, .2, .3, .8]: 1, 1, 1 (1.7 > .5).
    /// q2 (ref 5), answers [none, 5, 6, 6]:
    ///   SC 0 (nobody answered), 1, 0 (5:1, 6:2).
    ///   WS w = [-, e^-0.5, e^-1, e^-1]: 0, 1, 0 (.607 &lt; .736).
    ///   ASC [-, .9, .4, .4]: 0, 1, 1 (.9 > .8).
    /// q3 (ref ½), answers [0.5, 1/3, 1/2, 1/3]:
    ///   SC 1, ½, ½ (½:2, ⅓:2).
    ///   WS w = [e^-0.5, e^-0.25, e^-2, e^-2]: 1, 0 (.607 &lt; .779), 0 (.742 &lt; .914).
    ///   ASC [.2, .6, .3, .1]: 1, 0, 0 (.5 &lt; .7).
    /// Greedy: q1 "2" right, q2 "7" wrong, q3 "\frac12" right.
    /// </summary>
    private static Candidate[] MathSamples() =>
    [
        M("q1", 0, "2", -1, 10, 0.9), M("q1", 1, "3", -1, 1, 0.2), M("q1", 2, "3", -1, 1, 0.3), M("q1", 3, "2", -20, 10, 0.8),
        M("q2", 0, null, -9, 3, null), M("q2", 1, "5", -2, 4, 0.9), M("q2", 2, "6", -3, 3, 0.4), M("q2", 3, "6", -3, 3, 0.4),
        M("q3", 3, "1/3", -4, 2, 0.1), M("q3", 2, "1/2", -4, 2, 0.3), M("q3", 1, "1/3", -1, 4, 0.6), M("q3", 0, "0.5", -1, 2, 0.2),
    ];

    private static Candidate[] MathGreedy() =>
    [
        M("q1", 0, "2", -1, 5, null), M("q2", 0, "7", -1, 5, null), M("q3", 0, "\\frac12", -1, 5, null),
    ];

    [Test]
    public void Accuracy_per_subject_and_the_subject_average()
    {
        EvaluationReport r = Evaluator.Evaluate(AnswerTask.Math, MathQuestions, MathSamples(), MathGreedy());

        Assert.That(r.Ns, Is.EqualTo(new[] { 1, 2, 4 }));
        Assert.That(r.QuestionCounts["algebra"], Is.EqualTo(2));
        Assert.That(r.QuestionCounts["counting_and_probability"], Is.EqualTo(1));
        Assert.That(r.QuestionCounts["geometry"], Is.EqualTo(0));
        Assert.That(r.Questions, Is.EqualTo(3));
        Assert.That(r.CorrectFlagMismatches, Is.EqualTo(0));
        Assert.That(r.AscSkipped, Is.Null);

        AccuracyRow g = r.Greedy!;
        Assert.That(g.Accuracy["algebra"], Is.EqualTo(0.5));
        Assert.That(g.Accuracy["counting_and_probability"], Is.EqualTo(1.0));
        Assert.That(g.Accuracy.ContainsKey("geometry"), Is.False);
        Assert.That(g.Average, Is.EqualTo(0.75));         // mean of subjects, not pooled
        Assert.That(g.Pooled, Is.EqualTo(2.0 / 3.0).Within(1e-15));

        void Expect(VoteMethod m, int n, double alg, double cp)
        {
            AccuracyRow row = r.Find(m, n)!;
            Assert.That(row.Accuracy["algebra"], Is.EqualTo(alg), $"{m} N={n} algebra");
            Assert.That(row.Accuracy["counting_and_probability"], Is.EqualTo(cp), $"{m} N={n} C&P");
            Assert.That(row.Average, Is.EqualTo((alg + cp) / 2), $"{m} N={n} avg");
        }

        Expect(VoteMethod.Sc, 1, 0.5, 1.0);
        Expect(VoteMethod.Sc, 2, 0.75, 0.5);
        Expect(VoteMethod.Sc, 4, 0.25, 0.5);
        Expect(VoteMethod.Ws, 1, 0.5, 1.0);
        Expect(VoteMethod.Ws, 2, 1.0, 0.0);
        Expect(VoteMethod.Ws, 4, 0.5, 0.0);
        Expect(VoteMethod.Asc, 1, 0.5, 1.0);
        Expect(VoteMethod.Asc, 2, 1.0, 0.0);
        Expect(VoteMethod.Asc, 4, 1.0, 0.0);
        Assert.That(r.Find(VoteMethod.Sc, 8), Is.Null);
    }

    [Test]
    public void Markdown_math_table()
    {
        EvaluationReport r = Evaluator.Evaluate(AnswerTask.Math, MathQuestions, MathSamples(), MathGreedy());
        string text = EvaluationMarkdown.Render(r, "NAT");
        TestContext.Out.WriteLine(text);

        const string expected =
            "**MATH test accuracy (%)**\n" +
            "\n" +
            "| Method | C&P (n=1) | IntAlg (n=0) | NT (n=0) | Precalc (n=0) | Prealg (n=0) | Geo (n=0) | Alg (n=2) | Avg |\n" +
            "|:---|---:|---:|---:|---:|---:|---:|---:|---:|\n" +
            "| NAT greedy | 100.00 | - | - | - | - | - | 50.00 | 75.00 |\n" +
            "| NAT + SC (N=4) | 50.00 | - | - | - | - | - | 25.00 | 37.50 |\n" +
            "| NAT + WS (N=4) | 0.00 | - | - | - | - | - | 50.00 | 25.00 |\n" +
            "| NAT + ASC (N=4) | 0.00 | - | - | - | - | - | 100.00 | 50.00 |\n" +
            "\n" +
            "**Accuracy (%) against the number of candidates N (Avg over subjects)**\n" +
            "\n" +
            "| Aggregation | N=1 | N=2 | N=4 |\n" +
            "|:---|---:|---:|---:|\n" +
            "| NAT + SC | 75.00 | 62.50 | 37.50 |\n" +
            "| NAT + WS | 75.00 | 50.00 | 25.00 |\n" +
            "| NAT + ASC | 75.00 | 50.00 | 50.00 |\n" +
            "\n" +
            "Avg is the unweighted mean of the per-subject accuracies (as the paper reports its average over the 7 subjects), " +
            "not accuracy pooled over questions; a subject with n=0 shows - and is left out of Avg. n is the number of questions.\n" +
            "Votes over each question's first N sampled candidates; answers grouped by the MATH checker (is_equiv); " +
            "candidates without an answer do not vote; k answers tied for the top score earn 1/k when the correct one is among them. " +
            "Weights: SC 1, WS exp(log p / tokens) (length-normalised sequence probability), ASC the ranking model's score.\n";
        Assert.That(text, Is.EqualTo(expected));
    }

    [Test]
    public void Markdown_gsm8k_table_has_one_column_and_notes_missing_rank_scores()
    {
        EvalQuestion[] questions = [new("g1", "ignored", "18"), new("g2", "", "1000")];
        Candidate G(string q, int index, string output, double logProb, int tokens) =>
            Candidate.FromText(AnswerTask.Gsm8k, q, "gsm8k", index, output, questions.Single(x => x.QuestionId == q).ReferenceAnswer, logProb, tokens);

        // g1: 18.00 and $18 agree → right at N = 1, 2. g2: "1,000" (w = e^-1) against "999" (w = e^-0.5):
        // SC right at N = 1, tied (½) at N = 2; WS right at N = 1, wrong at N = 2.
        Candidate[] samples =
        [
            G("g1", 0, "Total: 18.00\n#### 18.00", -1, 1), G("g1", 1, "She pays $18.", -1, 1),
            G("g2", 0, "so 1,000 in all", -1, 1), G("g2", 1, "#### 999", -1, 2),
        ];
        EvaluationReport r = Evaluator.Evaluate(AnswerTask.Gsm8k, questions, samples);
        Assert.That(r.AscSkipped, Is.Not.Null);
        Assert.That(r.Greedy, Is.Null);

        const string expected =
            "**GSM8K test accuracy (%)**\n" +
            "\n" +
            "| Method | GSM8K (n=2) |\n" +
            "|:---|---:|\n" +
            "| SC (N=2) | 75.00 |\n" +
            "| WS (N=2) | 50.00 |\n" +
            "\n" +
            "**Accuracy (%) against the number of candidates N**\n" +
            "\n" +
            "| Aggregation | N=1 | N=2 |\n" +
            "|:---|---:|---:|\n" +
            "| SC | 100.00 | 75.00 |\n" +
            "| WS | 100.00 | 50.00 |\n" +
            "\n" +
            "n is the number of questions.\n" +
            "Votes over each question's first N sampled candidates; answers grouped by the GSM8K checker (numeric value); " +
            "candidates without an answer do not vote; k answers tied for the top score earn 1/k when the correct one is among them. " +
            "Weights: SC 1, WS exp(log p / tokens) (length-normalised sequence probability), ASC the ranking model's score.\n" +
            "ASC not computed (the candidates have no rank scores).\n";
        Assert.That(EvaluationMarkdown.Render(r), Is.EqualTo(expected));
    }

    [Test]
    public void Several_systems_share_one_table()
    {
        EvaluationReport nat = Evaluator.Evaluate(AnswerTask.Math, MathQuestions, MathSamples(), MathGreedy());
        EvaluationReport kd = Evaluator.Evaluate(AnswerTask.Math, MathQuestions, MathSamples().Where(c => c.Index < 2), MathGreedy());
        string text = EvaluationMarkdown.Render([("CoT KD", kd), ("NAT", nat)]);
        string[] lines = text.Split('\n');

        Assert.That(lines, Does.Contain("| CoT KD + SC (N=2) | 50.00 | - | - | - | - | - | 75.00 | 62.50 |"));
        Assert.That(lines, Does.Contain("| NAT + SC (N=4) | 50.00 | - | - | - | - | - | 25.00 | 37.50 |"));
        Assert.That(lines, Does.Contain("| Aggregation | N=1 | N=2 | N=4 |"));
        Assert.That(lines, Does.Contain("| CoT KD + ASC | 75.00 | 50.00 | - |"));
        Assert.That(Array.IndexOf(lines, "| CoT KD greedy | 100.00 | - | - | - | - | - | 50.00 | 75.00 |"),
            Is.LessThan(Array.IndexOf(lines, "| NAT greedy | 100.00 | - | - | - | - | - | 50.00 | 75.00 |")));

        EvaluationReport other = Evaluator.Evaluate(AnswerTask.Math, MathQuestions.Take(2).ToArray(), MathSamples().Where(c => c.QuestionId != "q3"));
        Assert.Throws<ArgumentException>(() => EvaluationMarkdown.Render([("NAT", nat), ("other", other)]));
    }

    [Test]
    public void Only_the_N_that_every_question_supports_are_evaluated()
    {
        // q2 loses its candidate 3: N = 4 is no longer supported.
        Candidate[] samples = MathSamples().Where(c => !(c.QuestionId == "q2" && c.Index == 3)).ToArray();
        EvaluationReport r = Evaluator.Evaluate(AnswerTask.Math, MathQuestions, samples, null, [16, 2, 1, 3, 2]);
        Assert.That(r.Ns, Is.EqualTo(new[] { 1, 2, 3 }));
        Assert.That(r.Votes.Select(v => (v.MethodName, v.N)), Is.EqualTo(new (string, int?)[]
        {
            ("SC", 1), ("SC", 2), ("SC", 3), ("WS", 1), ("WS", 2), ("WS", 3), ("ASC", 1), ("ASC", 2), ("ASC", 3),
        }));

        EvaluationReport none = Evaluator.Evaluate(AnswerTask.Math, MathQuestions, MathSamples().Where(c => c.QuestionId != "q3"), MathGreedy());
        Assert.That(none.Ns, Is.Empty);
        Assert.That(none.Votes, Is.Empty);
        string text = EvaluationMarkdown.Render(none);
        Assert.That(text, Does.Contain("| greedy | 100.00 |"));
        Assert.That(text, Does.Contain("no vote computed"));
        Assert.That(text, Does.Not.Contain("Aggregation"));
    }

    [Test]
    public void Rank_scores_all_or_none()
    {
        Candidate[] unscored = MathSamples().Select(c => c with { RankScore = null }).ToArray();
        EvaluationReport r = Evaluator.Evaluate(AnswerTask.Math, MathQuestions, unscored);
        Assert.That(r.Votes.Any(v => v.Method == VoteMethod.Asc), Is.False);
        Assert.That(r.AscSkipped, Is.EqualTo("the candidates have no rank scores"));

        Candidate[] mixed = MathSamples().Select(c => c.Index == 1 ? c with { RankScore = null } : c).ToArray();
        Assert.Throws<InvalidDataException>(() => Evaluator.Evaluate(AnswerTask.Math, MathQuestions, mixed));
    }

    [Test]
    public void Saved_correctness_that_disagrees_with_the_references_is_counted_and_flagged()
    {
        Candidate[] samples = MathSamples().Select(c => c.QuestionId == "q1" && c.Index == 0 ? c with { Correct = false } : c).ToArray();
        EvaluationReport r = Evaluator.Evaluate(AnswerTask.Math, MathQuestions, samples);
        Assert.That(r.CorrectFlagMismatches, Is.EqualTo(1));
        Assert.That(r.Find(VoteMethod.Sc, 1)!.Accuracy["algebra"], Is.EqualTo(0.5));   // scored against the references
        Assert.That(EvaluationMarkdown.Render(r), Does.Contain("warning: 1 candidates were saved as correct/incorrect differently"));
    }

    [Test]
    public void Inconsistent_inputs_are_rejected()
    {
        Assert.Throws<ArgumentException>(() => Evaluator.Evaluate(AnswerTask.Math, [new EvalQuestion("q", "Astrology", "1")], []));
        Assert.Throws<ArgumentException>(() => Evaluator.Evaluate(AnswerTask.Math, [new EvalQuestion("q", "algebra", "1"), new EvalQuestion("q", "algebra", "1")], []));
        Assert.Throws<ArgumentException>(() => Evaluator.Evaluate(AnswerTask.Math, MathQuestions.Take(2).ToArray(), MathSamples()));
        Assert.Throws<ArgumentException>(() => Evaluator.Evaluate(AnswerTask.Math, MathQuestions, MathSamples(), MathGreedy().Take(2)));
        Assert.Throws<ArgumentException>(() => Evaluator.Evaluate(AnswerTask.Math, MathQuestions, MathSamples(), [.. MathGreedy(), MathGreedy()[0]]));
    }
}
