using NegDistill.Data;
using NegDistill.Data.Evaluation;

namespace NegDistill.Data.Tests.Evaluation;

/// <summary>SC, WS and ASC on hand-worked candidate sets, grouping by checker equivalence, and N prefixes.</summary>
public class VoteTests
{
    private static Candidate C(string? answer, int index, double logProb = -1.0, int tokens = 1, double? rank = null, string question = "q1") =>
        new(question, "algebra", index, answer is null ? "no answer" : "... \\boxed{" + answer + "}", answer, false, logProb, tokens, rank);

    private static string[] WinnerAnswers(VoteResult r) => r.Winners.Select(w => w.Answer).ToArray();

    [Test]
    public void Sc_tie_between_two_answers_shares_the_credit()
    {
        Candidate[] cs = [C("2", 0), C("2", 1), C("3", 2), C("3", 3)];
        VoteResult r = Vote.Sc(AnswerTask.Math, cs);

        Assert.That(WinnerAnswers(r), Is.EqualTo(new[] { "2", "3" }));
        Assert.That(r.Scores.Select(s => s.Score), Is.EqualTo(new[] { 2.0, 2.0 }));
        Assert.That(r.Credit("2"), Is.EqualTo(0.5));
        Assert.That(r.Credit("3"), Is.EqualTo(0.5));
        Assert.That(r.Credit("4"), Is.EqualTo(0.0));
        Assert.That(r.Credit(null), Is.EqualTo(0.0));
    }

    [Test]
    public void Sc_three_way_tie_gives_a_third()
    {
        Candidate[] cs = [C("1", 0), C("2", 1), C("3", 2)];
        Assert.That(Vote.Sc(AnswerTask.Math, cs).Credit("2"), Is.EqualTo(1.0 / 3.0));
    }

    [Test]
    public void Sc_majority_wins_outright()
    {
        Candidate[] cs = [C("2", 0), C("3", 1), C("3", 2)];
        VoteResult r = Vote.Sc(AnswerTask.Math, cs);
        Assert.That(WinnerAnswers(r), Is.EqualTo(new[] { "3" }));
        Assert.That(r.Credit("3"), Is.EqualTo(1.0));
        Assert.That(r.Credit("2"), Is.EqualTo(0.0));
    }

    [Test]
    public void Asc_with_scores_favouring_the_wrong_answer_scores_zero()
    {
        // "2": 0.9 + 0.1 = 1.0; "3": 0.6 + 0.7 = 1.3.
        Candidate[] cs = [C("2", 0, rank: 0.9), C("2", 1, rank: 0.1), C("3", 2, rank: 0.6), C("3", 3, rank: 0.7)];
        VoteResult r = Vote.Asc(AnswerTask.Math, cs);

        Assert.That(WinnerAnswers(r), Is.EqualTo(new[] { "3" }));
        Assert.That(r.Scores[0].Score, Is.EqualTo(1.3).Within(1e-12));
        Assert.That(r.Scores[1].Score, Is.EqualTo(1.0).Within(1e-12));
        Assert.That(r.Credit("2"), Is.EqualTo(0.0));
        Assert.That(r.Credit("3"), Is.EqualTo(1.0));
        // The same answers under SC tie.
        Assert.That(Vote.Sc(AnswerTask.Math, cs).Credit("2"), Is.EqualTo(0.5));
    }

    [Test]
    public void Asc_exact_tie_shares_the_credit()
    {
        Candidate[] cs = [C("2", 0, rank: 0.5), C("2", 1, rank: 0.5), C("3", 2, rank: 0.25), C("3", 3, rank: 0.75)];
        Assert.That(Vote.Asc(AnswerTask.Math, cs).Credit("2"), Is.EqualTo(0.5));
    }

    [Test]
    public void Equal_weights_in_a_different_order_still_tie()
    {
        // Left to right, 0.1 + 0.2 + 0.3 = 0.6000000000000001 but 0.3 + 0.2 + 0.1 = 0.6; summing each
        // group in ascending order of weight makes the two groups' scores identical.
        Assert.That(0.1 + 0.2 + 0.3, Is.Not.EqualTo(0.3 + 0.2 + 0.1));
        Candidate[] cs =
        [
            C("2", 0, rank: 0.1), C("2", 1, rank: 0.2), C("2", 2, rank: 0.3),
            C("3", 3, rank: 0.3), C("3", 4, rank: 0.2), C("3", 5, rank: 0.1),
        ];
        VoteResult r = Vote.Asc(AnswerTask.Math, cs);
        Assert.That(r.Winners, Has.Count.EqualTo(2));
        Assert.That(r.Credit("3"), Is.EqualTo(0.5));
    }

    [Test]
    public void Ws_uses_the_length_normalised_probability()
    {
        // w = exp(LogProb / Tokens):
        //   "2": exp(-8/80) + exp(-10/100) = 2 e^-0.1 ≈ 1.8097
        //   "3": exp(-1/2)  + exp(-1.5/3)  = 2 e^-0.5 ≈ 1.2131  → "2" wins.
        // The raw sequence probabilities would pick "3": e^-8 + e^-10 ≈ 0.00038 < e^-1 + e^-1.5 ≈ 0.59.
        Candidate[] cs =
        [
            C("2", 0, logProb: -8, tokens: 80),
            C("3", 1, logProb: -1, tokens: 2),
            C("2", 2, logProb: -10, tokens: 100),
            C("3", 3, logProb: -1.5, tokens: 3),
        ];
        VoteResult r = Vote.Ws(AnswerTask.Math, cs);

        Assert.That(WinnerAnswers(r), Is.EqualTo(new[] { "2" }));
        Assert.That(r.Scores[0].Score, Is.EqualTo(2 * Math.Exp(-0.1)).Within(1e-12));
        Assert.That(r.Scores[1].Score, Is.EqualTo(2 * Math.Exp(-0.5)).Within(1e-12));
        Assert.That(r.Credit("2"), Is.EqualTo(1.0));
        Assert.That(Math.Exp(-8) + Math.Exp(-10), Is.LessThan(Math.Exp(-1) + Math.Exp(-1.5)));
        Assert.That(Vote.Weight(VoteMethod.Ws, cs[1]), Is.EqualTo(Math.Exp(-0.5)).Within(1e-15));
    }

    [Test]
    public void Ws_tie_shares_the_credit()
    {
        // "2": e^-0.5 + e^-1, "3": e^-1 + e^-0.5.
        Candidate[] cs =
        [
            C("2", 0, logProb: -1, tokens: 2), C("2", 1, logProb: -2, tokens: 2),
            C("3", 2, logProb: -2, tokens: 2), C("3", 3, logProb: -1, tokens: 2),
        ];
        Assert.That(Vote.Ws(AnswerTask.Math, cs).Credit("2"), Is.EqualTo(0.5));
    }

    [Test]
    public void The_checker_treats_these_forms_as_equivalent()
    {
        // What is_equiv actually says (the premise of the grouping test below).
        Assert.That(MathChecker.IsEquiv("\\frac{1}{2}", "0.5"), Is.True);      // "0.5" is rewritten to \frac{1}{2}
        Assert.That(MathChecker.IsEquiv("1/2", "\\frac{1}{2}"), Is.True);      // a/b → \frac{a}{b}
        Assert.That(MathChecker.IsEquiv("\\dfrac12", "0.5"), Is.True);         // dfrac → frac, \frac12 → \frac{1}{2}
        Assert.That(MathChecker.IsEquiv("x = 3", "3"), Is.True);               // short left side of "=" dropped
        Assert.That(MathChecker.IsEquiv("0.50", "0.5"), Is.False);             // no numeric comparison
        Assert.That(MathChecker.IsEquiv("10%", "10"), Is.False);               // only "\%" is removed
    }

    [Test]
    public void Equivalent_answers_vote_together()
    {
        Candidate[] cs = [C("0.5", 0), C("3", 1), C("\\frac{1}{2}", 2), C("3", 3), C("1/2", 4), C("\\dfrac12", 5), C("0.50", 6)];
        VoteResult r = Vote.Sc(AnswerTask.Math, cs);

        Assert.That(r.Scores, Has.Count.EqualTo(3));
        AnswerScore half = r.Winners.Single();
        Assert.That(half.Answer, Is.EqualTo("0.5"));                      // written as the first candidate wrote it
        Assert.That(half.Votes, Is.EqualTo(4));
        Assert.That(half.Indices, Is.EqualTo(new[] { 0, 2, 4, 5 }));
        Assert.That(r.Scores[1].Answer, Is.EqualTo("3"));
        Assert.That(r.Scores[2].Answer, Is.EqualTo("0.50"));
        Assert.That(r.Credit("\\frac12"), Is.EqualTo(1.0));
    }

    [Test]
    public void Math_group_keys_agree_with_is_equiv_on_every_pair()
    {
        string[] pool =
        [
            "2", "3", "0.5", "\\frac{1}{2}", "\\frac12", "1/2", "\\dfrac{1}{2}", "\\tfrac12", "0.50", ".5",
            "x = 3", "x=3", "3", "10\\%", "10", "10%", "\\left(1,2\\right)", "(1,2)", "5^\\circ", "5",
            "\\sqrt", "\\sqrt", "a\\sqrt", "\\frac", "1\\frac", "\\text{ a}\\text{ b}", "\\text{ a}\\text{ b} ",
            "4 \\text{ cm}", "4", "\\$4", "", " ", "\\frac{}{}", "\\sqrt2", "\\sqrt{2}",
        ];
        foreach (string a in pool)
        {
            foreach (string b in pool)
            {
                bool sameKey = TaskAnswers.GroupKey(AnswerTask.Math, a) == TaskAnswers.GroupKey(AnswerTask.Math, b);
                Assert.That(sameKey, Is.EqualTo(MathChecker.IsEquiv(a, b)), $"'{a}' vs '{b}'");
            }
        }

        // Strings whose normalisation raises fall back to raw comparison, in their own key space.
        Assert.That(TaskAnswers.GroupKey(AnswerTask.Math, "\\sqrt"), Is.EqualTo("R:\\sqrt"));
        Assert.That(TaskAnswers.GroupKey(AnswerTask.Math, "0.5"), Is.EqualTo("S:\\frac{1}{2}"));
    }

    [Test]
    public void Gsm8k_group_keys_agree_with_its_checker_and_group_numbers()
    {
        string[] pool = ["18", "18.0", "18.00", "$18", "\\$18", "18.", "1,000", "1000", "1000.5", "-0", "0", "0.0", "3/4", "0.75", ".75", "abc", "abc.", "ABC", "-18", "1/3", "2/6"];
        foreach (string a in pool)
        {
            foreach (string b in pool)
            {
                bool sameKey = TaskAnswers.GroupKey(AnswerTask.Gsm8k, a) == TaskAnswers.GroupKey(AnswerTask.Gsm8k, b);
                Assert.That(sameKey, Is.EqualTo(Gsm8kChecker.IsEquiv(a, b)), $"'{a}' vs '{b}'");
            }
        }

        Candidate[] cs = [C("18", 0), C("1,000", 1), C("18.00", 2), C("1000", 3), C("$18", 4), C("17", 5)];
        VoteResult r = Vote.Sc(AnswerTask.Gsm8k, cs);
        Assert.That(r.Scores.Select(s => (s.Answer, s.Votes)), Is.EqualTo(new[] { ("18", 3), ("1,000", 2), ("17", 1) }));
        Assert.That(r.Credit("18"), Is.EqualTo(1.0));
    }

    [Test]
    public void Candidates_without_an_answer_do_not_vote()
    {
        // Three unanswered candidates cannot outvote one answer, and need no rank score.
        Candidate[] cs = [C(null, 0), C(null, 1), C("5", 2, rank: 0.2, logProb: -3, tokens: 3), C(null, 3)];
        foreach (VoteMethod m in Enum.GetValues<VoteMethod>())
        {
            VoteResult r = Vote.By(m, AnswerTask.Math, cs);
            Assert.That(r.N, Is.EqualTo(4));
            Assert.That(r.Scores, Has.Count.EqualTo(1), m.ToString());
            Assert.That(r.Scores[0].Votes, Is.EqualTo(1));
            Assert.That(r.Credit("5"), Is.EqualTo(1.0), m.ToString());
        }

        VoteResult none = Vote.Asc(AnswerTask.Math, [C(null, 0), C(null, 1)]);
        Assert.That(none.Winners, Is.Empty);
        Assert.That(none.Credit("5"), Is.EqualTo(0.0));
    }

    [Test]
    public void A_missing_answer_is_not_correct_even_against_a_missing_reference()
    {
        Candidate c = Candidate.FromText(AnswerTask.Math, "q", "algebra", 0, "I give up", null, -2, 4);
        Assert.That(c.Answer, Is.Null);
        Assert.That(c.Correct, Is.False);

        Candidate d = Candidate.FromText(AnswerTask.Math, "q", "algebra", 1, "so $\\boxed{\\dfrac12}$", "0.5", -2, 4);
        Assert.That(d.Answer, Is.EqualTo("\\dfrac12"));
        Assert.That(d.Correct, Is.True);

        Candidate g = Candidate.FromText(AnswerTask.Gsm8k, "g", "gsm8k", 0, "3 + 15 = 18\n#### 18", "18.0", -2, 4, 0.5);
        Assert.That(g.Answer, Is.EqualTo("18"));
        Assert.That(g.Correct, Is.True);
        Assert.That(g.RankScore, Is.EqualTo(0.5));
    }

    [Test]
    public void Only_the_first_N_candidates_by_index_vote()
    {
        // Given out of order; by index: 0:"1" 1:"1" 2:"2" 3:"2" 4:"2" 5:"3".
        Candidate[] cs = [C("2", 4), C("3", 5), C("1", 1), C("2", 2), C("1", 0), C("2", 3)];

        Assert.That(WinnerAnswers(Vote.Sc(AnswerTask.Math, cs, 1)), Is.EqualTo(new[] { "1" }));
        Assert.That(WinnerAnswers(Vote.Sc(AnswerTask.Math, cs, 2)), Is.EqualTo(new[] { "1" }));
        Assert.That(Vote.Sc(AnswerTask.Math, cs, 4).Credit("1"), Is.EqualTo(0.5));
        Assert.That(WinnerAnswers(Vote.Sc(AnswerTask.Math, cs, 5)), Is.EqualTo(new[] { "2" }));
        Assert.That(Vote.Sc(AnswerTask.Math, cs).N, Is.EqualTo(6));
        Assert.That(Vote.Sc(AnswerTask.Math, cs, 3).Scores.Sum(s => s.Votes), Is.EqualTo(3));

        // Gaps in the indices: the first N present ones are used.
        Candidate[] gappy = [C("7", 0), C("8", 5), C("8", 9)];
        Assert.That(WinnerAnswers(Vote.Sc(AnswerTask.Math, gappy, 3)), Is.EqualTo(new[] { "8" }));
    }

    [Test]
    public void Invalid_inputs_are_rejected()
    {
        Candidate[] cs = [C("1", 0), C("2", 1)];
        Assert.Throws<ArgumentException>(() => Vote.Sc(AnswerTask.Math, cs, 3));
        Assert.Throws<ArgumentOutOfRangeException>(() => Vote.Sc(AnswerTask.Math, cs, 0));
        Assert.Throws<ArgumentException>(() => Vote.Sc(AnswerTask.Math, [C("1", 0), C("2", 0)]));
        Assert.Throws<ArgumentException>(() => Vote.Sc(AnswerTask.Math, [C("1", 0), C("2", 1, question: "q2")]));

        Assert.Throws<InvalidOperationException>(() => Vote.Asc(AnswerTask.Math, [C("1", 0, rank: 0.5), C("2", 1)]));
        Assert.Throws<InvalidOperationException>(() => Vote.Asc(AnswerTask.Math, [C("1", 0, rank: 1.5)]));
        Assert.Throws<InvalidOperationException>(() => Vote.Asc(AnswerTask.Math, [C("1", 0, rank: double.NaN)]));
        Assert.Throws<InvalidOperationException>(() => Vote.Ws(AnswerTask.Math, [C("1", 0, tokens: 0)]));
        Assert.Throws<InvalidOperationException>(() => Vote.Ws(AnswerTask.Math, [C("1", 0, logProb: 0.5)]));
    }

    [Test]
    public void Asc_with_all_scores_equal_is_sc([Values(AnswerTask.Math, AnswerTask.Gsm8k)] AnswerTask task)
    {
        string?[] pool = task == AnswerTask.Math
            ? ["1", "2", "3", "0.5", "\\frac12", "1/2", "x = 3", null, "\\sqrt", "4\\%", "4"]
            : ["1", "2", "3", "3.0", "$3", "1,000", "1000", "abc", null, "0.5", ".5"];
        var rng = new Random(20240101);
        int ties = 0;
        for (int trial = 0; trial < 2000; trial++)
        {
            int count = rng.Next(1, 17);
            double score = trial % 10 == 0 ? 1.0 : 1e-6 + rng.NextDouble() * (1 - 1e-6);
            var cs = new List<Candidate>();
            foreach (int index in Enumerable.Range(0, count).OrderBy(_ => rng.Next()))
            {
                cs.Add(C(pool[rng.Next(pool.Length)], index, rank: score, logProb: -rng.NextDouble() * 50, tokens: rng.Next(1, 200)));
            }

            int n = rng.Next(1, count + 1);
            VoteResult sc = Vote.Sc(task, cs, n);
            VoteResult asc = Vote.Asc(task, cs, n);
            Assert.That(asc.Winners.Select(w => w.Key), Is.EqualTo(sc.Winners.Select(w => w.Key)), $"trial {trial}");
            Assert.That(asc.Scores.Select(s => s.Key), Is.EquivalentTo(sc.Scores.Select(s => s.Key)));
            foreach (AnswerScore s in asc.Scores)
            {
                Assert.That(s.Score, Is.EqualTo(score * s.Votes).Within(1e-12));
            }

            foreach (string? reference in pool)
            {
                Assert.That(asc.Credit(reference), Is.EqualTo(sc.Credit(reference)));
            }

            ties += sc.Winners.Count > 1 ? 1 : 0;
        }

        Assert.That(ties, Is.GreaterThan(100), "the generator should produce plenty of ties");
    }
}
