using System.Globalization;

namespace NegDistill.Checkpoints;

/// <summary>First and second moment estimates (Adam's m and v) for one parameter, in float32.</summary>
public sealed class OptimizerMoments
{
    private readonly long[] _shape;

    public OptimizerMoments(IReadOnlyList<long> shape, float[] m, float[] v)
    {
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(m);
        ArgumentNullException.ThrowIfNull(v);
        _shape = shape.ToArray();
        long count = Shapes.ElementCount(_shape, null);
        if (m.LongLength != count || v.LongLength != count)
            throw new ArgumentException($"shape {Shapes.Format(_shape)} has {count} elements but m has {m.LongLength} and v has {v.LongLength}");
        M = m;
        V = v;
    }

    public IReadOnlyList<long> Shape => _shape;

    public float[] M { get; }

    public float[] V { get; }
}

/// <summary>
/// Everything needed to resume training: counters, data position, RNG state, free-form values and the optimiser
/// moments. Saved as one safetensors file: each parameter's moments are F32 tensors "optim.m.&lt;param&gt;" and
/// "optim.v.&lt;param&gt;", the rest goes in __metadata__ as strings. Floats come back bit for bit.
/// </summary>
public sealed class TrainingState
{
    public const string MomentPrefixM = "optim.m.";
    public const string MomentPrefixV = "optim.v.";
    public const string FormatName = "negdistill-training-state";
    public const string FormatVersion = "1";

    private const string KeyFormat = "format";
    private const string KeyVersion = "format_version";
    private const string KeyStep = "step";
    private const string KeyEpoch = "epoch";
    private const string KeyCursor = "data_cursor";
    private const string KeyRng = "rng_state";
    private const string ValuePrefix = "value.";

    public long Step { get; set; }

    public long Epoch { get; set; }

    /// <summary>Position in the training data (e.g. the index of the next example).</summary>
    public long DataCursor { get; set; }

    /// <summary>The trainer's RNG state in whatever text form it serialises to.</summary>
    public string RngState { get; set; } = "";

    /// <summary>Any other key/values the trainer wants back (learning-rate schedule position, loss scale, ...).</summary>
    public Dictionary<string, string> Values { get; } = new(StringComparer.Ordinal);

    /// <summary>Optimiser moments keyed by parameter name.</summary>
    public Dictionary<string, OptimizerMoments> Moments { get; } = new(StringComparer.Ordinal);

    /// <summary>Writes the state atomically.</summary>
    public void Save(string path)
    {
        ArgumentNullException.ThrowIfNull(RngState, nameof(RngState));
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [KeyFormat] = FormatName,
            [KeyVersion] = FormatVersion,
            [KeyStep] = Step.ToString(CultureInfo.InvariantCulture),
            [KeyEpoch] = Epoch.ToString(CultureInfo.InvariantCulture),
            [KeyCursor] = DataCursor.ToString(CultureInfo.InvariantCulture),
            [KeyRng] = RngState,
        };
        foreach (var (k, v) in Values)
        {
            ArgumentNullException.ThrowIfNull(v, $"Values['{k}']");
            metadata[ValuePrefix + k] = v;
        }

        var tensors = new List<StoredTensor>();
        foreach (var (param, moments) in Moments.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            ArgumentException.ThrowIfNullOrEmpty(param, "parameter name");
            tensors.Add(StoredTensor.FromFloat32(MomentPrefixM + param, moments.Shape, moments.M));
            tensors.Add(StoredTensor.FromFloat32(MomentPrefixV + param, moments.Shape, moments.V));
        }
        SafeTensors.Write(path, tensors, metadata);
    }

    public static TrainingState Load(string path)
    {
        using var file = SafeTensors.Open(path);
        var meta = file.Metadata;
        if (!meta.TryGetValue(KeyFormat, out string? format) || format != FormatName)
            throw Invalid(path, null, $"metadata \"format\" is {(format is null ? "missing" : $"\"{format}\"")}; expected \"{FormatName}\"");
        if (!meta.TryGetValue(KeyVersion, out string? version) || version != FormatVersion)
            throw Invalid(path, null, $"metadata \"format_version\" is {(version is null ? "missing" : $"\"{version}\"")}; this reader understands \"{FormatVersion}\"");

        var state = new TrainingState
        {
            Step = ParseLong(meta, KeyStep, path),
            Epoch = ParseLong(meta, KeyEpoch, path),
            DataCursor = ParseLong(meta, KeyCursor, path),
            RngState = meta.TryGetValue(KeyRng, out string? rng) ? rng : throw Invalid(path, null, "metadata \"rng_state\" is missing"),
        };
        foreach (var (k, v) in meta)
            if (k.StartsWith(ValuePrefix, StringComparison.Ordinal)) state.Values[k[ValuePrefix.Length..]] = v;

        foreach (string name in file.Names)
        {
            string param;
            bool isM;
            if (name.StartsWith(MomentPrefixM, StringComparison.Ordinal)) { param = name[MomentPrefixM.Length..]; isM = true; }
            else if (name.StartsWith(MomentPrefixV, StringComparison.Ordinal)) { param = name[MomentPrefixV.Length..]; isM = false; }
            else throw Invalid(path, name, $"unexpected tensor; a training state holds only '{MomentPrefixM}<param>' and '{MomentPrefixV}<param>'");

            var info = file.Info(name);
            if (info.Type != StorageType.F32)
                throw Invalid(path, name, $"optimiser moments are stored as F32, found {info.Type.DtypeName()}");
            if (param.Length == 0)
                throw Invalid(path, name, "the parameter name after the prefix is empty");
            string partnerName = (isM ? MomentPrefixV : MomentPrefixM) + param;
            if (!file.Contains(partnerName))
                throw Invalid(path, name, $"has no partner: '{partnerName}' is missing");
            if (!isM) continue; // handled together with its m

            var partner = file.Info(partnerName);
            if (partner.Type != StorageType.F32)
                throw Invalid(path, partnerName, $"optimiser moments are stored as F32, found {partner.Type.DtypeName()}");
            if (!partner.Shape.SequenceEqual(info.Shape))
                throw Invalid(path, partnerName, $"shape {Shapes.Format(partner.Shape)} differs from {Shapes.Format(info.Shape)} of '{name}'");
            state.Moments[param] = new OptimizerMoments(info.Shape, file.ReadFloat32(name), file.ReadFloat32(partnerName));
        }
        return state;
    }

    private static long ParseLong(IReadOnlyDictionary<string, string> meta, string key, string path)
    {
        if (!meta.TryGetValue(key, out string? text))
            throw Invalid(path, null, $"metadata \"{key}\" is missing");
        if (!long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long value))
            throw Invalid(path, null, $"metadata \"{key}\" is \"{text}\", not an integer");
        return value;
    }

    private static CheckpointFormatException Invalid(string path, string? tensor, string detail) =>
        new(CheckpointErrorKind.InvalidTrainingState, path, tensor, detail);
}
