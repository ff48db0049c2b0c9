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
/// sequence from the final normed hidden states, then s = h·w + b, p = σ(s), and binary cross-entropy
/// averaged over the batch:
///   L = −(1/B) Σ_b [y_b log p_b + (1−y_b) log(1−p_b)],   dL/ds_b = (p_b − y_b)/B,
///   dh_b = dL/ds_b · w,  dw = Σ_b dL/ds_b · h_b,  db = Σ_b dL/ds_b.
/// Mean: h_b = Σ_t m_bt·x_bt / Σ_t m_bt, so every real token t gets dx_bt = m_bt/Σ_t m_bt · dh_b; with P the
/// (B, N) matrix of those weights, h = P·x and dx += Pᵀ·dh (two matmuls). Last: h_b = x at the last real row.
/// </summary>
public sealed class RankHead : IHiddenHead, IDisposable
{
    /// <summary>The metadata key of the head's file that records its pooling (a file without it pools the last token, as heads did before).</summary>
    public const string PoolingKey = "pooling";

    readonly IBackend _ops;
    readonly Tensor _score;

    public RankHead(IBackend ops, int dim, ulong seed, RankPooling pooling = RankPooling.Mean)
    {
        _ops = ops;
        Pooling = pooling;
        W = new Param(ops, "score.weight", DType.F32, true, 1, dim);
        Bias = new Param(ops, "score.bias", DType.F32, true, 1);
        ops.Upload(W.W, Init.KaimingUniform(dim, dim, seed));
        _score = ops.Alloc("score.tmp", DType.F32, 1);
    }

    public Param W { get; }
    public Param Bias { get; }
    /// <summary>Set by the constructor, or by <see cref="Load"/> from the file.</summary>
    public RankPooling Pooling { get; private set; }
    public IEnumerable<Param> Parameters => [W, Bias];

    /// <summary>Probabilities of the last batch, one per sequence.</summary>
    public float[] LastScores { get; private set; } = [];

    public double Run(LlamaModel model, ModelBatch batch, Tensor hidden, Tensor? dHidden) =>
        Pooling == RankPooling.Mean ? RunMean(model, batch, hidden, dHidden) : RunLast(model, batch, hidden, dHidden);

    double RunMean(LlamaModel model, ModelBatch batch, Tensor hidden, Tensor? dHidden)
    {
        int c = model.Config.Dim, bs = batch.B, n = bs * batch.T;
        var labels = batch.Labels ?? throw new ArgumentException("ranking batch has no labels");
        var weights = new float[(long)bs * n];                      // P (B, N): row b holds m_bt / Σ_t m_bt at b's rows
        for (int b = 0; b < bs; b++)
        {
            double sum = 0;
            for (int t = 0; t < batch.T; t++) sum += batch.Mask[b * batch.T + t];
            if (sum == 0) throw new ArgumentException($"ranking batch row {b} has no real token");
            for (int t = 0; t < batch.T; t++) weights[(long)b * n + b * batch.T + t] = (float)(batch.Mask[b * batch.T + t] / sum);
        }
        using var pool = _ops.Alloc("rank.pool", DType.F32, bs, n);
        using var pooled = _ops.Alloc("rank.pooled", DType.F32, bs, c);
        using var s = _ops.Alloc("rank.s", DType.F32, bs, 1);
        _ops.Upload(pool, weights);
        _ops.MatMul(pooled, pool, hidden, bs, c, n, false, false);       // h(B,C) = P·x
        _ops.MatMul(s, pooled, W.W, bs, 1, c, false, true);              // s(B,1) = h·wᵀ
        var sv = new float[bs];
        _ops.Download(s, sv);
        double bias = _ops.Sum(Bias.W, 1);
        var p = new float[bs];
        var dS = new float[bs];
        double loss = 0, db = 0;
        for (int b = 0; b < bs; b++)
        {
            double z = sv[b] + bias, pb = 1 / (1 + Math.Exp(-z));
            p[b] = (float)pb;
            dS[b] = (float)((pb - labels[b]) / bs);
            db += dS[b];
            loss += labels[b] * Softplus(-z) + (1 - labels[b]) * Softplus(z);
        }
        LastScores = p;
        if (dHidden != null)
        {
            using var ds = _ops.Alloc("rank.ds", DType.F32, bs, 1);
            using var dh = _ops.Alloc("rank.dh", DType.F32, bs, c);
            _ops.Upload(ds, dS);
            _ops.MatMul(dh, ds, W.W, bs, c, 1, false, false);                 // dh(B,C) = dS·w
            _ops.MatMul(dHidden, pool, dh, n, c, bs, true, false, 1f, 1f);    // dx(N,C) += Pᵀ·dh
            _ops.MatMul(W.Grad!, ds, pooled, 1, c, bs, true, false, 1f, 1f);  // dw(1,C) += dSᵀ·h
            AddToBias(db);
        }
        return loss / bs;
    }

    void AddToBias(double db)
    {
        var gb = new float[1];
        _ops.Download(Bias.Grad!, gb);
        gb[0] += (float)db;
        _ops.Upload(Bias.Grad!, gb);
    }

    double RunLast(LlamaModel model, ModelBatch batch, Tensor hidden, Tensor? dHidden)
    {
        int c = model.Config.Dim;
        var labels = batch.Labels ?? throw new ArgumentException("ranking batch has no labels");
        double bias = _ops.Sum(Bias.W, 1);                         // Sum reads a scalar at the backend's precision
        var p = new float[batch.B];
        var dS = new double[batch.B];
        double loss = 0;
        for (int b = 0; b < batch.B; b++)
        {
            var h = _ops.View(hidden, (long)batch.LastRow(b) * c, 1, c);
            _ops.MatMul(_score, h, W.W, 1, 1, c, false, true);        // s = h·wᵀ
            double s = _ops.Sum(_score, 1) + bias;
            double pb = 1 / (1 + Math.Exp(-s));
            p[b] = (float)pb;
            dS[b] = (pb - labels[b]) / batch.B;
            // log σ(s) and log(1−σ(s)) computed stably
            loss += labels[b] * Softplus(-s) + (1 - labels[b]) * Softplus(s);
        }
        LastScores = p;
        if (dHidden != null)
        {
            double db = 0;
            for (int b = 0; b < batch.B; b++)
            {
                float g = (float)dS[b];
                long row = (long)batch.LastRow(b) * c;
                _ops.Axpy(_ops.View(dHidden, row, 1, c), W.W, g, c);
                _ops.Axpy(W.Grad!, _ops.View(hidden, row, 1, c), g, c);
                db += g;
            }
            AddToBias(db);
        }
        return loss / batch.B;
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
        Checkpoints.SafeTensors.Write(path, [
            Checkpoints.StoredTensor.FromFloat32("score.weight", [1, W.Length], w),
            Checkpoints.StoredTensor.FromFloat32("score.bias", [1], b)],
            new Dictionary<string, string> { [PoolingKey] = Pooling.ToString().ToLowerInvariant() });
    }

    /// <summary>Loads w, b and the pooling written by <see cref="Save"/>.</summary>
    public void Load(string path)
    {
        using var f = Checkpoints.SafeTensors.Open(path);
        Pooling = f.Metadata.TryGetValue(PoolingKey, out var pooling) ? pooling switch
        {
            "mean" => RankPooling.Mean,
            "last" => RankPooling.Last,
            _ => throw new Checkpoints.CheckpointFormatException(Checkpoints.CheckpointErrorKind.InvalidHeader, path, null, $"pooling '{pooling}' is neither mean nor last"),
        } : RankPooling.Last;
        foreach (var (name, p) in new[] { ("score.weight", W), ("score.bias", Bias) })
        {
            if (!f.Contains(name))
                throw new Checkpoints.CheckpointFormatException(Checkpoints.CheckpointErrorKind.MissingTensor, path, name, "the ranking head needs this tensor");
            if (f.Info(name).ElementCount != p.Length)
                throw new Checkpoints.CheckpointFormatException(Checkpoints.CheckpointErrorKind.ShapeMismatch, path, name,
                    $"has {f.Info(name).ElementCount} elements; the model's hidden size needs {p.Length}");
            _ops.Upload(p.W, f.ReadFloat32(name));
        }
    }

    public void Dispose() { W.Dispose(); Bias.Dispose(); _score.Dispose(); }
}
