using NegDistill.Runtime;

namespace NegDistill.Model;

/// <summary>
/// The ranking model's head (method.md, step 3: M_rank scores a (question, rationale) pair in [0,1]).
/// The authors used a T5 encoder; here M_rank is the same LLaMA backbone with a LoRA and a scalar head,
/// so one engine serves every stage. Pooling takes the final normed hidden state of each sequence's last
/// real token (as transformers' LlamaForSequenceClassification does), then s = h·w + b, p = σ(s), and
/// binary cross-entropy averaged over the batch:
///   L = −(1/B) Σ_b [y_b log p_b + (1−y_b) log(1−p_b)],   dL/ds_b = (p_b − y_b)/B,
///   dh_last(b) = dL/ds_b · w,  dw = Σ_b dL/ds_b · h_last(b),  db = Σ_b dL/ds_b.
/// </summary>
public sealed class RankHead : IHiddenHead, IDisposable
{
    readonly IBackend _ops;
    readonly Tensor _score;

    public RankHead(IBackend ops, int dim, ulong seed)
    {
        _ops = ops;
        W = new Param(ops, "score.weight", DType.F32, true, 1, dim);
        Bias = new Param(ops, "score.bias", DType.F32, true, 1);
        ops.Upload(W.W, Init.KaimingUniform(dim, dim, seed));
        _score = ops.Alloc("score.tmp", DType.F32, 1);
    }

    public Param W { get; }
    public Param Bias { get; }
    public IEnumerable<Param> Parameters => [W, Bias];

    /// <summary>Probabilities of the last batch, one per sequence.</summary>
    public float[] LastScores { get; private set; } = [];

    public double Run(LlamaModel model, ModelBatch batch, Tensor hidden, Tensor? dHidden)
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
            var gb = new float[1];
            _ops.Download(Bias.Grad!, gb);
            gb[0] += (float)db;
            _ops.Upload(Bias.Grad!, gb);
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
    /// transformers' LlamaForSequenceClassification head.</summary>
    public void Save(string path)
    {
        var w = new float[W.Length]; _ops.Download(W.W, w);
        var b = new float[1]; _ops.Download(Bias.W, b);
        Checkpoints.SafeTensors.Write(path, [
            Checkpoints.StoredTensor.FromFloat32("score.weight", [1, W.Length], w),
            Checkpoints.StoredTensor.FromFloat32("score.bias", [1], b)]);
    }

    /// <summary>Loads w and b written by <see cref="Save"/>.</summary>
    public void Load(string path)
    {
        using var f = Checkpoints.SafeTensors.Open(path);
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
