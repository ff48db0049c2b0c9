namespace NegDistill.Data.Evaluation;

/// <summary>A difference of accuracies between two methods on the same problems: the mean difference, its
/// paired-bootstrap 95 % interval and McNemar's exact p-value.</summary>
/// <param name="Delta">mean over problems (and seeds) of correct_a − correct_b.</param>
/// <param name="OnlyA">pairs (problem, seed) that a solved and b did not.</param>
/// <param name="OnlyB">pairs that b solved and a did not.</param>
public sealed record PairedComparison(double Delta, double Lo, double Hi, int OnlyA, int OnlyB, double PValue);

/// <summary>
/// The statistics the demo reports, each with a known-answer test: Wilson's interval for a proportion,
/// McNemar's exact test and a paired bootstrap for two methods judged on the same problems, the mean and
/// sample standard deviation across seeds, and the AUC of scores against labels.
/// </summary>
public static class Stats
{
    /// <summary>Wilson's score interval for k successes in n trials (z = 1.96: 95 %).</summary>
    public static (double Lo, double Hi) Wilson(int k, int n, double z = 1.96)
    {
        if (n < 0 || k < 0 || k > n) throw new ArgumentOutOfRangeException(nameof(k), $"need 0 ≤ k ≤ n (k = {k}, n = {n})");
        if (n == 0) return (0, 1);
        double p = (double)k / n, d = 1 + z * z / n;
        double c = (p + z * z / (2.0 * n)) / d, h = z * Math.Sqrt(p * (1 - p) / n + z * z / (4.0 * n * n)) / d;
        return (Math.Max(0, c - h), Math.Min(1, c + h));
    }

    /// <summary>McNemar's exact test, two-sided: with b pairs where only the first method is right and c where
    /// only the second is, p = min(1, 2·P(X ≤ min(b, c))) for X ~ Binomial(b + c, ½). No discordant pair: p = 1.</summary>
    public static double McNemarExact(int b, int c)
    {
        if (b < 0 || c < 0) throw new ArgumentOutOfRangeException(nameof(b), "counts must be non-negative");
        int n = b + c, k = Math.Min(b, c);
        if (n == 0) return 1;
        // Σ_{i ≤ k} C(n, i) / 2^n in log space (n can be in the thousands)
        double logHalfN = -n * Math.Log(2), sum = 0, logC = 0;
        for (int i = 0; i <= k; i++)
        {
            if (i > 0) logC += Math.Log(n - i + 1) - Math.Log(i);
            sum += Math.Exp(logC + logHalfN);
        }
        return Math.Min(1, 2 * sum);
    }

    /// <summary>
    /// Methods a and b on the same problems: <paramref name="a"/>[problem][seed] and <paramref name="b"/>[problem][seed]
    /// are 1 when solved. The difference is the mean over every (problem, seed) pair; its 95 % interval comes from
    /// <paramref name="resamples"/> bootstrap draws of whole problems (a problem keeps all its seeds, so the
    /// seeds' correlation on one problem is respected); the p-value is McNemar's exact test on the discordant
    /// (problem, seed) pairs.
    /// </summary>
    public static PairedComparison Paired(IReadOnlyList<bool[]> a, IReadOnlyList<bool[]> b, int resamples = 2000, ulong seed = 1)
    {
        if (a.Count != b.Count || a.Count == 0) throw new ArgumentException($"need the same, non-zero number of problems (got {a.Count} and {b.Count})");
        int problems = a.Count, onlyA = 0, onlyB = 0, pairs = 0;
        var perProblem = new double[problems];
        for (int i = 0; i < problems; i++)
        {
            if (a[i].Length != b[i].Length || a[i].Length == 0) throw new ArgumentException($"problem {i}: both methods need the same, non-zero number of seeds");
            int d = 0;
            for (int s = 0; s < a[i].Length; s++)
            {
                if (a[i][s] && !b[i][s]) { onlyA++; d++; }
                else if (!a[i][s] && b[i][s]) { onlyB++; d--; }
            }
            perProblem[i] = d;
            pairs += a[i].Length;
        }
        double delta = (double)(onlyA - onlyB) / pairs;
        var rng = new SplitMix64(seed);
        var draws = new double[resamples];
        int seedsPerProblem = pairs / problems;
        for (int r = 0; r < resamples; r++)
        {
            double sum = 0;
            for (int i = 0; i < problems; i++) sum += perProblem[rng.NextInt(problems)];
            draws[r] = sum / ((double)problems * seedsPerProblem);
        }
        Array.Sort(draws);
        return new PairedComparison(delta, Quantile(draws, 0.025), Quantile(draws, 0.975), onlyA, onlyB, McNemarExact(onlyA, onlyB));
    }

    /// <summary>The q-quantile of sorted values, linear between order statistics (type 7, R's default).</summary>
    public static double Quantile(IReadOnlyList<double> sorted, double q)
    {
        if (sorted.Count == 0) throw new ArgumentException("no values");
        double h = (sorted.Count - 1) * q;
        int lo = (int)Math.Floor(h), hi = Math.Min(sorted.Count - 1, lo + 1);
        return sorted[lo] + (h - lo) * (sorted[hi] - sorted[lo]);
    }

    /// <summary>Mean and sample standard deviation (n − 1; 0 for a single value).</summary>
    public static (double Mean, double Sd) MeanSd(IReadOnlyList<double> x)
    {
        if (x.Count == 0) throw new ArgumentException("no values");
        double mean = x.Average();
        if (x.Count == 1) return (mean, 0);
        double ss = x.Sum(v => (v - mean) * (v - mean));
        return (mean, Math.Sqrt(ss / (x.Count - 1)));
    }

    /// <summary>A 95 % bootstrap interval of the AUC: <paramref name="resamples"/> draws of the positives and of the
    /// negatives, each with replacement within its class (so every draw has both).</summary>
    public static (double Lo, double Hi) AucInterval(IReadOnlyList<double> scores, IReadOnlyList<bool> positive, int resamples = 1000, ulong seed = 1)
    {
        var pos = scores.Where((_, i) => positive[i]).ToArray();
        var neg = scores.Where((_, i) => !positive[i]).ToArray();
        if (pos.Length == 0 || neg.Length == 0) return (double.NaN, double.NaN);
        var rng = new SplitMix64(seed);
        var draws = new double[resamples];
        var s = new double[pos.Length + neg.Length];
        var l = new bool[s.Length];
        for (int i = 0; i < pos.Length; i++) l[i] = true;
        for (int r = 0; r < resamples; r++)
        {
            for (int i = 0; i < pos.Length; i++) s[i] = pos[rng.NextInt(pos.Length)];
            for (int i = 0; i < neg.Length; i++) s[pos.Length + i] = neg[rng.NextInt(neg.Length)];
            draws[r] = Auc(s, l);
        }
        Array.Sort(draws);
        return (Quantile(draws, 0.025), Quantile(draws, 0.975));
    }

    /// <summary>Area under the ROC curve: the chance that a random positive outscores a random negative, ties
    /// counting one half (Mann–Whitney U / (n₊·n₋), from mid-ranks). NaN without both classes.</summary>
    public static double Auc(IReadOnlyList<double> scores, IReadOnlyList<bool> positive)
    {
        if (scores.Count != positive.Count) throw new ArgumentException("one label per score");
        var order = Enumerable.Range(0, scores.Count).OrderBy(i => scores[i]).ToArray();
        var rank = new double[scores.Count];
        for (int i = 0; i < order.Length;)
        {
            int j = i;
            while (j + 1 < order.Length && scores[order[j + 1]] == scores[order[i]]) j++;
            double mid = (i + j) / 2.0 + 1;                          // ranks are 1-based; ties share the mean rank
            for (int t = i; t <= j; t++) rank[order[t]] = mid;
            i = j + 1;
        }
        long nPos = positive.Count(p => p), nNeg = positive.Count - nPos;
        if (nPos == 0 || nNeg == 0) return double.NaN;
        double sumPos = 0;
        for (int i = 0; i < rank.Length; i++) if (positive[i]) sumPos += rank[i];
        return (sumPos - nPos * (nPos + 1) / 2.0) / ((double)nPos * nNeg);
    }
}
