using NegDistill.Runtime;

namespace NegDistill.Model;

/// <summary>How the ranking head pools a sequence's final hidden states into one vector.</summary>
public enum RankPooling
{
    /// <summary>The mean over the sequence's real tokens, as the authors' ranking model pools its T5 encoder ("avg").</summary>
    Mean,
    /// <summary>The last real token's state, as transformers' LlamaForSequenceClassification does.</summary>
    Last,
}

/// <summary>
/// The ranking model's head (method.md, step 3: M_rank scores a (question, rationale) pair in [0,1]).
/// The authors used a T5 encoder; here M_rank is the same LLaMA backbone with a LoRA and a scalar head,
/// so one engine serves every stage. Pooling (<see cref="RankPooling"/>) makes one vector h_b per
/// sequence from the final normed hidden states x; with <see cref="Likelihood"/>, the head also reads the
/// backbone's own likelihood of the sequence's target tokens T_b (the rationale's, as the batch marks them):
/// f_b = (mean_{t∈T_b} log p(y_t), min_{t∈T_b} log p(y_t)), weighted by λ (two weights, zero at the start).
///   s_b = w·h_b + λ·f_b + b,  p_b = σ(s_b),  L = −(1/B) Σ_b [y_b log p_b + (1−y_b) log(1−p_b)],  dL/ds_b = (p_b − y_b)/B
///   dh_b = dL/ds_b · w,  dw = Σ_b dL/ds_b · h_b,  db = Σ_b dL/ds_b,  dλ = Σ_b dL/ds_b · f_b
///   Mean: h_b = Σ_t m_bt·x_bt / Σ_t m_bt; with P the (B, N) matrix of those weights h = P·x and dx += Pᵀ·dh.
///   Last: h_b = x at b's last real row.
///   Likelihood: with ce_t = −log p(y_t), dL/dce_t = −dL/ds_b·(λ₀/|T_b| + λ₁·[t = argmax_{T_b} ce]) flows back
///   through the LM head (<see cref="LlamaModel.TokenLossesBackward"/>).
/// </summary>
public sealed class RankHead : IHiddenHead, IDisposable
{
    /// <summary>The metadata key of the head's file that records its pooling (a file without it pools the last token, as heads did before).</summary>
    public const string PoolingKey = "pooling";
    const string LikelihoodName = "score.likelihood";

    readonly IBackend _ops;

    /// <param name="likelihood">read the backbone's mean and min token log-likelihood too (<see cref="Likelihood"/>)</param>
    public RankHead(IBackend ops, int dim, ulong seed, RankPooling pooling = RankPooling.Mean, bool likelihood = false)
    {
        _ops = ops;
        (Pooling, Likelihood) = (pooling, likelihood);
        W = new Param(ops, "score.weight", DType.F32, true, 1, dim);
        Bias = new Param(ops, "score.bias", DType.F32, true, 1);
        Lambda = new Param(ops, LikelihoodName, DType.F32, true, 1, 2);
        ops.Upload(W.W, Init.KaimingUniform(dim, dim, seed));
    }

    public Param W { get; }
    public Param Bias { get; }
    /// <summary>λ: the weights of the mean and the min token log-likelihood (used only with <see cref="Likelihood"/>).</summary>
    public Param Lambda { get; }
    /// <summary>Set by the constructor, or by <see cref="Load"/> from the file.</summary>
    public RankPooling Pooling { get; private set; }
    /// <summary>Whether the score reads the backbone's token log-likelihoods; set by the constructor or by <see cref="Load"/>.</summary>
    public bool Likelihood { get; private set; }
    public IEnumerable<Param> Parameters => Likelihood ? [W, Bias, Lambda] : [W, Bias];

    /// <summary>Probabilities of the last batch, one per sequence.</summary>
    public float[] LastScores { get; private set; } = [];

    public double Run(LlamaModel model, ModelBatch batch, Tensor hidden, Tensor? dHidden)
    {
        int c = model.Config.Dim, bs = batch.B, t = batch.T, n = bs * t;
        var labels = batch.Labels ?? throw new ArgumentException("ranking batch has no labels");
        using var pooled = _ops.Alloc("rank.pooled", DType.F32, bs, c);
        using var sw = _ops.Alloc("rank.s", DType.F32, bs, 1);
        Tensor? pool = null;
        try
        {
            if (Pooling == RankPooling.Mean)
            {
                var weights = new float[(long)bs * n];              // P (B, N): row b holds m_bt / Σ_t m_bt at b's rows
                for (int b = 0; b < bs; b++)
                {
                    double sum = 0;
                    for (int j = 0; j < t; j++) sum += batch.Mask[b * t + j];
                    if (sum == 0) throw new ArgumentException($"ranking batch row {b} has no real token");
                    for (int j = 0; j < t; j++) weights[(long)b * n + b * t + j] = (float)(batch.Mask[b * t + j] / sum);
                }
                pool = _ops.Alloc("rank.pool", DType.F32, bs, n);
                _ops.Upload(pool, weights);
                _ops.MatMul(pooled, pool, hidden, bs, c, n, false, false);       // h(B,C) = P·x
            }
            else
                for (int b = 0; b < bs; b++) _ops.Copy(_ops.View(pooled, (long)b * c, 1, c), _ops.View(hidden, (long)batch.LastRow(b) * c, 1, c));
            _ops.MatMul(sw, pooled, W.W, bs, 1, c, false, true);                  // w·h (B,1)
            var z = new double[bs];                                   // scalars read through Sum keep the backend's precision (the fp64 oracle)
            for (int b = 0; b < bs; b++) z[b] = _ops.Sum(_ops.View(sw, b, 1), 1);

            // the likelihood features: mean and min log p over each sequence's target rows
            var fMean = new double[bs]; var fMin = new double[bs]; var argMax = new int[bs];
            var lambda = new double[2];
            if (Likelihood)
            {
                var ce = model.TokenLosses();
                for (int i = 0; i < 2; i++) lambda[i] = _ops.Sum(_ops.View(Lambda.W, i, 1), 1);
                for (int b = 0; b < bs; b++)
                {
                    double sum = 0, worst = double.NegativeInfinity; int count = 0; argMax[b] = -1;
                    for (int j = 0; j < t; j++)
                    {
                        int r = b * t + j;
                        if (batch.Targets[r] < 0) continue;
                        sum += ce[r]; count++;
                        if (ce[r] > worst) (worst, argMax[b]) = (ce[r], r);
                    }
                    (fMean[b], fMin[b]) = count > 0 ? (-sum / count, -worst) : (0, 0);
                }
            }

            double bias = _ops.Sum(Bias.W, 1);                        // Sum reads a scalar at the backend's precision
            var p = new float[bs];
            var dS = new float[bs];
            double loss = 0, db = 0;
            for (int b = 0; b < bs; b++)
            {
                double s = z[b] + bias + lambda[0] * fMean[b] + lambda[1] * fMin[b], pb = 1 / (1 + Math.Exp(-s));
                p[b] = (float)pb;
                dS[b] = (float)((pb - labels[b]) / bs);
                db += dS[b];
                // log σ(s) and log(1−σ(s)) computed stably
                loss += labels[b] * Softplus(-s) + (1 - labels[b]) * Softplus(s);
            }
            LastScores = p;
            if (dHidden == null) return loss / bs;

            using var ds = _ops.Alloc("rank.ds", DType.F32, bs, 1);
            using var dh = _ops.Alloc("rank.dh", DType.F32, bs, c);
            _ops.Upload(ds, dS);
            _ops.MatMul(dh, ds, W.W, bs, c, 1, false, false);                     // dh(B,C) = dS·w
            if (pool != null) _ops.MatMul(dHidden, pool, dh, n, c, bs, true, false, 1f, 1f);   // dx(N,C) += Pᵀ·dh
            else for (int b = 0; b < bs; b++) _ops.Axpy(_ops.View(dHidden, (long)batch.LastRow(b) * c, 1, c), _ops.View(dh, (long)b * c, 1, c), 1f, c);
            _ops.MatMul(W.Grad!, ds, pooled, 1, c, bs, true, false, 1f, 1f);      // dw(1,C) += dSᵀ·h
            AddTo(Bias.Grad!, [(float)db]);
            if (Likelihood)
            {
                var g = new float[n];                                 // dL/dce per row
                for (int b = 0; b < bs; b++)
                {
                    int count = 0;
                    for (int j = 0; j < t; j++) if (batch.Targets[b * t + j] >= 0) count++;
                    for (int j = 0; j < t; j++) if (batch.Targets[b * t + j] >= 0) g[b * t + j] = (float)(-dS[b] * lambda[0] / count);
                    if (argMax[b] >= 0) g[argMax[b]] += (float)(-dS[b] * lambda[1]);
                }
                model.TokenLossesBackward(g, dHidden);
                AddTo(Lambda.Grad!, [(float)Enumerable.Range(0, bs).Sum(b => dS[b] * fMean[b]), (float)Enumerable.Range(0, bs).Sum(b => dS[b] * fMin[b])]);
            }
            return loss / bs;
        }
        finally { pool?.Dispose(); }
    }

    void AddTo(Tensor grad, float[] add)
    {
        var g = new float[add.Length];
        _ops.Download(grad, g);
        for (int i = 0; i < g.Length; i++) g[i] += add[i];
        _ops.Upload(grad, g);
    }

    static double Softplus(double x) => x > 0 ? x + Math.Log(1 + Math.Exp(-x)) : Math.Log(1 + Math.Exp(x));

    /// <summary>Scores sequences (dropout off, no gradients).</summary>
    public float[] Score(LlamaModel model, ModelBatch batch)
    {
        var labeled = batch.Labels != null ? batch : batch with { Labels = new float[batch.B] };
        model.StepHidden(labeled, this, backward: false, training: false);
        return LastScores;
    }

    /// <summary>Area under the ROC curve by the rank statistic (ties count one half).</summary>
    public static double Auc(IReadOnlyList<float> scores, IReadOnlyList<float> labels)
    {
        double pairs = 0, wins = 0;
        for (int i = 0; i < scores.Count; i++)
            if (labels[i] > 0.5f)
                for (int j = 0; j < scores.Count; j++)
                    if (labels[j] <= 0.5f) { pairs++; wins += scores[i] > scores[j] ? 1 : scores[i] == scores[j] ? 0.5 : 0; }
        return pairs == 0 ? double.NaN : wins / pairs;
    }

    /// <summary>The head's file inside the ranking model's adapter folder.</summary>
    public const string FileName = "score_head.safetensors";

    /// <summary>Writes w and b as "score.weight" (1, C) and "score.bias" (1), the names of
    /// transformers' LlamaForSequenceClassification head, and the pooling as metadata.</summary>
    public void Save(string path)
    {
        var w = new float[W.Length]; _ops.Download(W.W, w);
        var b = new float[1]; _ops.Download(Bias.W, b);
        var tensors = new List<Checkpoints.StoredTensor>
        {
            Checkpoints.StoredTensor.FromFloat32("score.weight", [1, W.Length], w),
            Checkpoints.StoredTensor.FromFloat32("score.bias", [1], b),
        };
        if (Likelihood)
        {
            var l = new float[2]; _ops.Download(Lambda.W, l);
            tensors.Add(Checkpoints.StoredTensor.FromFloat32(LikelihoodName, [1, 2], l));
        }
        Checkpoints.SafeTensors.Write(path, tensors, new Dictionary<string, string> { [PoolingKey] = Pooling.ToString().ToLowerInvariant() });
    }

    /// <summary>Loads w, b, the pooling and (when the file has them) the likelihood weights written by <see cref="Save"/>.</summary>
    public void Load(string path)
    {
        using var f = Checkpoints.SafeTensors.Open(path);
        Pooling = f.Metadata.TryGetValue(PoolingKey, out var pooling) ? pooling switch
        {
            "mean" => RankPooling.Mean,
            "last" => RankPooling.Last,
            _ => throw new Checkpoints.CheckpointFormatException(Checkpoints.CheckpointErrorKind.InvalidHeader, path, null, $"pooling '{pooling}' is neither mean nor last"),
        } : RankPooling.Last;
        Likelihood = f.Contains(LikelihoodName);
        foreach (var (name, p) in Likelihood ? new[] { ("score.weight", W), ("score.bias", Bias), (LikelihoodName, Lambda) } : [("score.weight", W), ("score.bias", Bias)])
        {
            if (!f.Contains(name))
                throw new Checkpoints.CheckpointFormatException(Checkpoints.CheckpointErrorKind.MissingTensor, path, name, "the ranking head needs this tensor");
            if (f.Info(name).ElementCount != p.Length)
                throw new Checkpoints.CheckpointFormatException(Checkpoints.CheckpointErrorKind.ShapeMismatch, path, name,
                    $"has {f.Info(name).ElementCount} elements; the model's hidden size needs {p.Length}");
            _ops.Upload(p.W, f.ReadFloat32(name));
        }
    }

    public void Dispose() { W.Dispose(); Bias.Dispose(); Lambda.Dispose(); }
}
