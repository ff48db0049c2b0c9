using NegDistill.Data.Evaluation;

namespace NegDistill.Data.Tests.Evaluation;

/// <summary>The demo's statistics against values worked by hand or published by standard implementations
/// (statsmodels' mcnemar(exact=True), scikit-learn's roc_auc_score, R's quantile type 7).</summary>
public class StatsTests
{
    [Test]
    public void Wilson_matches_the_closed_form()
    {
        var (lo, hi) = Stats.Wilson(5, 10);
        Assert.That(lo, Is.EqualTo(0.236590).Within(1e-6));   // R: prop.test(5, 10, correct = FALSE)$conf.int = 0.2366, 0.7634
        Assert.That(hi, Is.EqualTo(0.763410).Within(1e-6));
        // k = 0: the lower end is 0 and the upper z²/(n + z²)
        (lo, hi) = Stats.Wilson(0, 10);
        Assert.That(lo, Is.EqualTo(0));
        Assert.That(hi, Is.EqualTo(1.96 * 1.96 / (10 + 1.96 * 1.96)).Within(1e-12));
        (lo, hi) = Stats.Wilson(10, 10);
        Assert.That(hi, Is.EqualTo(1));
        Assert.That(lo, Is.EqualTo(10 / (10 + 1.96 * 1.96)).Within(1e-12));
        // the interval's defining property: at either end the score statistic |p̂ − p| / √(p(1 − p)/n) is z
        (lo, hi) = Stats.Wilson(81, 263);
        foreach (double end in new[] { lo, hi })
            Assert.That(Math.Abs(81 / 263.0 - end) / Math.Sqrt(end * (1 - end) / 263), Is.EqualTo(1.96).Within(1e-9));
        Assert.Throws<ArgumentOutOfRangeException>(() => Stats.Wilson(11, 10));
    }

    [Test]
    public void McNemar_exact_is_the_two_sided_binomial_tail()
    {
        Assert.That(Stats.McNemarExact(1, 9), Is.EqualTo(2 * 11 / 1024.0).Within(1e-15));   // statsmodels: 0.021484375
        Assert.That(Stats.McNemarExact(9, 1), Is.EqualTo(Stats.McNemarExact(1, 9)));
        Assert.That(Stats.McNemarExact(0, 6), Is.EqualTo(2 / 64.0).Within(1e-15));
        Assert.That(Stats.McNemarExact(3, 1), Is.EqualTo(2 * 5 / 16.0).Within(1e-15));
        Assert.That(Stats.McNemarExact(5, 5), Is.EqualTo(1));
        Assert.That(Stats.McNemarExact(0, 0), Is.EqualTo(1));
        // large counts stay finite and accurate: b = 400, c = 500, normal approximation z = 100/√900 = 3.33
        double p = Stats.McNemarExact(400, 500);
        Assert.That(p, Is.GreaterThan(0.0008).And.LessThan(0.0010));
    }

    [Test]
    public void Paired_comparison_counts_discordant_pairs_and_bootstraps_whole_problems()
    {
        // 10 problems, 1 seed: a solves 0–4, b solves 2–5: only a solves 0 and 1, only b solves 5
        var a = Enumerable.Range(0, 10).Select(i => new[] { i < 5 }).ToList();
        var b = Enumerable.Range(0, 10).Select(i => new[] { i >= 2 && i <= 5 }).ToList();
        var r = Stats.Paired(a, b, resamples: 4000);
        Assert.That((r.OnlyA, r.OnlyB), Is.EqualTo((2, 1)));
        Assert.That(r.Delta, Is.EqualTo(0.1).Within(1e-12));
        Assert.That(r.PValue, Is.EqualTo(Stats.McNemarExact(2, 1)));
        Assert.That(r.Lo, Is.LessThan(r.Delta));
        Assert.That(r.Hi, Is.GreaterThan(r.Delta));
        // identical methods: no difference and no spread
        var same = Stats.Paired(a, a);
        Assert.That((same.Delta, same.Lo, same.Hi, same.PValue), Is.EqualTo((0.0, 0.0, 0.0, 1.0)));
        // a always right, b never: the difference is 1 in every resample
        var all = Enumerable.Range(0, 7).Select(_ => new[] { true, true, true }).ToList();
        var none = Enumerable.Range(0, 7).Select(_ => new[] { false, false, false }).ToList();
        var full = Stats.Paired(all, none);
        Assert.That((full.Delta, full.Lo, full.Hi, full.OnlyA), Is.EqualTo((1.0, 1.0, 1.0, 21)));
        Assert.Throws<ArgumentException>(() => Stats.Paired(a, b.Take(9).ToList()));
    }

    [Test]
    public void Paired_bootstrap_interval_has_the_spread_of_the_per_problem_differences()
    {
        // 400 problems, one seed, differences +1 on 100 and −1 on 60: Δ = 0.1, sd of a per-problem difference
        // √(160/400 − 0.01) = 0.6245, so the 95 % interval is about Δ ± 1.96·0.6245/√400 = Δ ± 0.0612.
        var a = Enumerable.Range(0, 400).Select(i => new[] { i < 100 }).ToList();
        var b = Enumerable.Range(0, 400).Select(i => new[] { i >= 100 && i < 160 }).ToList();
        var r = Stats.Paired(a, b, resamples: 4000, seed: 7);
        Assert.That(r.Delta, Is.EqualTo(0.1).Within(1e-12));
        Assert.That(r.Lo, Is.EqualTo(0.1 - 0.0612).Within(0.01));
        Assert.That(r.Hi, Is.EqualTo(0.1 + 0.0612).Within(0.01));
    }

    [Test]
    public void Quantile_is_type_7()
    {
        double[] x = [1, 2, 3, 4];
        Assert.That(Stats.Quantile(x, 0.5), Is.EqualTo(2.5));
        Assert.That(Stats.Quantile(x, 0), Is.EqualTo(1));
        Assert.That(Stats.Quantile(x, 1), Is.EqualTo(4));
        Assert.That(Stats.Quantile(x, 0.25), Is.EqualTo(1.75));
    }

    [Test]
    public void Mean_and_sample_sd()
    {
        var (m, sd) = Stats.MeanSd([2, 4, 4, 4, 5, 5, 7, 9]);
        Assert.That(m, Is.EqualTo(5));
        Assert.That(sd, Is.EqualTo(Math.Sqrt(32.0 / 7)).Within(1e-12));
        Assert.That(Stats.MeanSd([3.5]), Is.EqualTo((3.5, 0.0)));
    }

    [Test]
    public void Auc_interval_brackets_the_auc_and_collapses_when_separation_is_perfect()
    {
        var rng = new SplitMix64(3);
        var scores = new List<double>(); var labels = new List<bool>();
        for (int i = 0; i < 400; i++)
        {
            bool pos = i % 2 == 0;
            scores.Add(rng.NextDouble() + (pos ? 0.3 : 0));              // overlapping classes: AUC ≈ 0.75
            labels.Add(pos);
        }
        double auc = Stats.Auc(scores, labels);
        var (lo, hi) = Stats.AucInterval(scores, labels);
        Assert.That(lo, Is.LessThan(auc));
        Assert.That(hi, Is.GreaterThan(auc));
        // Hanley & McNeil's standard error for AUC ≈ 0.75 with 200 + 200: ≈ 0.024, so the interval is about ±0.047
        Assert.That(hi - lo, Is.EqualTo(2 * 1.96 * 0.024).Within(0.02));
        Assert.That(Stats.AucInterval([0.9, 0.8, 0.1, 0.2], [true, true, false, false]), Is.EqualTo((1.0, 1.0)));
    }

    [Test]
    public void Auc_counts_ties_as_half()
    {
        // scikit-learn's documented example: roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) = 0.75
        Assert.That(Stats.Auc([0.1, 0.4, 0.35, 0.8], [false, false, true, true]), Is.EqualTo(0.75).Within(1e-12));
        Assert.That(Stats.Auc([0.5, 0.5], [true, false]), Is.EqualTo(0.5));
        Assert.That(Stats.Auc([0.9, 0.8, 0.1], [true, true, false]), Is.EqualTo(1));
        Assert.That(Stats.Auc([0.1, 0.8, 0.9], [true, true, false]), Is.EqualTo(0));
        // ties across classes: positives {0.5, 0.7}, negatives {0.5, 0.2}: pairs (0.5,0.5) ½, (0.5,0.2) 1, (0.7,·) 2 → 3.5/4
        Assert.That(Stats.Auc([0.5, 0.7, 0.5, 0.2], [true, true, false, false]), Is.EqualTo(0.875).Within(1e-12));
        Assert.That(Stats.Auc([0.3, 0.4], [true, true]), Is.NaN);
    }
}
