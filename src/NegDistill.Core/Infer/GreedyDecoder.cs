using NegDistill.Model;

namespace NegDistill.Infer;

/// <summary>
/// Greedy decoding by full recomputation: each step runs the whole (right-padded) batch through the
/// model and takes the arg-max at each row's last real position. Quadratic in length and meant for
/// tiny models and as the reference a KV-cache sampler must agree with, not for speed.
/// </summary>
public static class GreedyDecoder
{
    /// <param name="prompts">token ids per row (BOS included)</param>
    /// <returns>the generated continuation of each row, EOS excluded</returns>
    public static int[][] Generate(LlamaModel model, IReadOnlyList<int[]> prompts, int maxNewTokens, int eos, int pad = 0, int batchSize = 32)
    {
        var outp = new int[prompts.Count][];
        for (int b0 = 0; b0 < prompts.Count; b0 += batchSize)
        {
            int nb = Math.Min(batchSize, prompts.Count - b0);
            var seqs = Enumerable.Range(b0, nb).Select(i => new List<int>(prompts[i])).ToArray();
            var done = new bool[nb];
            int v = model.Config.Vocab;
            for (int step = 0; step < maxNewTokens && done.Contains(false); step++)
            {
                int t = Math.Min(seqs.Max(s => s.Count), model.Config.MaxSeq);
                var tok = new int[nb * t]; var tgt = new int[nb * t]; var mask = new float[nb * t];
                Array.Fill(tgt, -1);
                for (int r = 0; r < nb; r++)
                {
                    var s = seqs[r];
                    int start = Math.Max(0, s.Count - t);          // keep the most recent MaxSeq tokens
                    for (int j = 0; j < t; j++)
                    {
                        bool real = start + j < s.Count;
                        tok[r * t + j] = real ? s[start + j] : pad;
                        mask[r * t + j] = real ? 1 : 0;
                    }
                }
                var logits = model.Logits(new ModelBatch(nb, t, tok, tgt, mask));
                for (int r = 0; r < nb; r++)
                {
                    if (done[r]) continue;
                    int last = Math.Min(seqs[r].Count, t) - 1;
                    var row = logits.AsSpan((r * t + last) * v, v);
                    int arg = 0;
                    for (int j = 1; j < v; j++) if (row[j] > row[arg]) arg = j;
                    if (arg == eos) { done[r] = true; continue; }
                    seqs[r].Add(arg);
                }
            }
            for (int r = 0; r < nb; r++) outp[b0 + r] = seqs[r].Skip(prompts[b0 + r].Length).ToArray();
        }
        return outp;
    }
}
