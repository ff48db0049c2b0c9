using System.Text.Json;
using System.Text.RegularExpressions;

namespace NegDistill.Checkpoints;

/// <summary>
/// A model checkpoint folder in the Hugging Face layout: either a single <c>model.safetensors</c>, or shards named
/// <c>model-00001-of-00003.safetensors</c> plus <c>model.safetensors.index.json</c> of the form
/// {"metadata": {"total_size": bytes}, "weight_map": {tensor name: shard file}}.
/// </summary>
public static partial class ShardedCheckpoint
{
    public const string SingleFileName = "model.safetensors";
    public const string IndexFileName = "model.safetensors.index.json";

    /// <summary>The shard file name for 1-based <paramref name="index"/> of <paramref name="count"/>.</summary>
    public static string ShardFileName(int index, int count) => $"model-{index:D5}-of-{count:D5}.safetensors";

    /// <summary>
    /// Writes <paramref name="tensors"/> into <paramref name="directory"/> (created if needed), splitting them into
    /// shards the way Hugging Face (huggingface_hub) does: tensors are taken in order; one larger than
    /// <paramref name="maxShardBytes"/> is appended at once as a shard of its own (so it may come before the shard
    /// still being filled); otherwise the shard being filled is closed when the next tensor would take it past the
    /// limit. One shard is written as model.safetensors without an index; several get the index.
    /// Each shard's __metadata__ is <paramref name="metadata"/> with "format": "pt" added when absent (transformers
    /// refuses safetensors files without a format). Every file is written atomically; the index is written after
    /// the shards, and files left from an earlier save in another layout are deleted last, so a reader opening the
    /// folder at any moment finds either the old or the new checkpoint as a whole (except when an earlier save had
    /// the same shard count, whose same-named shards are replaced one at a time).
    /// </summary>
    /// <returns>The file names written, shards first, then the index if any.</returns>
    public static IReadOnlyList<string> Write(string directory, IEnumerable<StoredTensor> tensors, long maxShardBytes, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxShardBytes);
        var list = tensors.ToList();
        var duplicate = list.GroupBy(t => t.Name, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null) throw new ArgumentException($"tensor name '{duplicate.Key}' appears more than once");

        var shards = Split(list, maxShardBytes);
        var shardMetadata = WithFormat(metadata);
        Directory.CreateDirectory(directory);

        if (shards.Count == 1)
        {
            SafeTensors.Write(Path.Combine(directory, SingleFileName), shards[0], shardMetadata);
            DeleteIfExists(Path.Combine(directory, IndexFileName));
            DeleteStaleShards(directory, keep: []);
            return [SingleFileName];
        }

        var names = new List<string>();
        var weightMap = new Dictionary<string, object?>(StringComparer.Ordinal);
        long totalSize = 0;
        for (int i = 0; i < shards.Count; i++)
        {
            string file = ShardFileName(i + 1, shards.Count);
            SafeTensors.Write(Path.Combine(directory, file), shards[i], shardMetadata);
            names.Add(file);
            foreach (var t in shards[i])
            {
                weightMap[t.Name] = file;
                totalSize += t.ByteLength;
            }
        }
        var index = new Dictionary<string, object?>
        {
            ["metadata"] = new Dictionary<string, object?> { ["total_size"] = totalSize },
            ["weight_map"] = weightMap,
        };
        AtomicFile.WriteAllText(Path.Combine(directory, IndexFileName), PythonJson.Serialize(index) + "\n");
        DeleteIfExists(Path.Combine(directory, SingleFileName));
        DeleteStaleShards(directory, keep: names);
        names.Add(IndexFileName);
        return names;
    }

    /// <summary>
    /// Opens a checkpoint folder: model.safetensors if present (as transformers prefers it), otherwise
    /// model.safetensors.index.json and every shard it names. All shard headers are validated, and every tensor the
    /// index lists is checked to be present in its shard, before this returns.
    /// </summary>
    public static ShardedReader Open(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        string single = Path.Combine(directory, SingleFileName);
        string indexPath = Path.Combine(directory, IndexFileName);
        if (File.Exists(single))
        {
            var file = SafeTensors.Open(single);
            return new ShardedReader(directory, null, [file], file.Names.ToDictionary(n => n, _ => 0, StringComparer.Ordinal), file.Names.ToArray(), file.Metadata);
        }
        if (!File.Exists(indexPath))
            throw new CheckpointFormatException(CheckpointErrorKind.MissingFile, directory, null,
                $"folder holds neither {SingleFileName} nor {IndexFileName}");
        return OpenIndexed(directory, indexPath);
    }

    internal static List<List<StoredTensor>> Split(List<StoredTensor> tensors, long maxShardBytes)
    {
        var shards = new List<List<StoredTensor>>();
        var current = new List<StoredTensor>();
        long currentSize = 0;
        foreach (var t in tensors)
        {
            if (t.ByteLength > maxShardBytes)
            {
                shards.Add([t]);
                continue;
            }
            if (current.Count > 0 && currentSize + t.ByteLength > maxShardBytes)
            {
                shards.Add(current);
                current = [];
                currentSize = 0;
            }
            current.Add(t);
            currentSize += t.ByteLength;
        }
        if (current.Count > 0 || shards.Count == 0) shards.Add(current);
        return shards;
    }

    private static Dictionary<string, string> WithFormat(IReadOnlyDictionary<string, string>? metadata)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        if (metadata is not null) foreach (var (k, v) in metadata) result[k] = v;
        result.TryAdd("format", "pt");
        return result;
    }

    private static ShardedReader OpenIndexed(string directory, string indexPath)
    {
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(File.ReadAllBytes(indexPath));
        }
        catch (JsonException e)
        {
            throw new CheckpointFormatException(CheckpointErrorKind.InvalidJson, indexPath, null, $"index is not valid JSON: {e.Message}", e);
        }

        var order = new List<string>();
        var fileOf = new Dictionary<string, string>(StringComparer.Ordinal);
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new CheckpointFormatException(CheckpointErrorKind.InvalidIndex, indexPath, null, $"index must be a JSON object, found {root.ValueKind}");
            if (root.TryGetProperty("metadata", out var meta) && meta.ValueKind == JsonValueKind.Object)
                foreach (var p in meta.EnumerateObject())
                    metadata[p.Name] = p.Value.ValueKind == JsonValueKind.String ? p.Value.GetString()! : p.Value.GetRawText();
            if (!root.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw new CheckpointFormatException(CheckpointErrorKind.InvalidIndex, indexPath, null, "index has no \"weight_map\" object");
            foreach (var p in map.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.String)
                    throw new CheckpointFormatException(CheckpointErrorKind.InvalidIndex, indexPath, p.Name, $"weight_map entry must be a file name string, found {p.Value.ValueKind}");
                string file = p.Value.GetString()!;
                if (file.Length == 0 || file != Path.GetFileName(file) || file is "." or ".." || file.Contains('/') || file.Contains('\\'))
                    throw new CheckpointFormatException(CheckpointErrorKind.InvalidIndex, indexPath, p.Name, $"weight_map names '{file}', which is not a plain file name in the checkpoint folder");
                if (!fileOf.TryAdd(p.Name, file))
                    throw new CheckpointFormatException(CheckpointErrorKind.DuplicateTensor, indexPath, p.Name, "weight_map lists this tensor more than once");
                order.Add(p.Name);
            }
        }

        var shardNames = order.Select(n => fileOf[n]).Distinct(StringComparer.Ordinal).ToList();
        var files = new List<SafeTensorsFile>();
        try
        {
            foreach (string shard in shardNames)
            {
                string shardPath = Path.Combine(directory, shard);
                if (!File.Exists(shardPath))
                {
                    var users = order.Where(n => fileOf[n] == shard).ToList();
                    string others = users.Count > 1 ? $" and {users.Count - 1} more" : "";
                    throw new CheckpointFormatException(CheckpointErrorKind.MissingFile, shardPath, users[0],
                        $"shard file is missing; {IndexFileName} maps this tensor{others} to it");
                }
                files.Add(SafeTensors.Open(shardPath));
            }
            var shardIndex = shardNames.Select((s, i) => (s, i)).ToDictionary(x => x.s, x => x.i, StringComparer.Ordinal);
            var location = new Dictionary<string, int>(StringComparer.Ordinal);
            foreach (string name in order)
            {
                int i = shardIndex[fileOf[name]];
                if (!files[i].Contains(name))
                    throw new CheckpointFormatException(CheckpointErrorKind.MissingTensor, files[i].Path, name,
                        $"{IndexFileName} maps this tensor to this shard, but the shard does not contain it");
                location[name] = i;
            }
            return new ShardedReader(directory, indexPath, files, location, order.ToArray(), metadata);
        }
        catch
        {
            foreach (var f in files) f.Dispose();
            throw;
        }
    }

    private static void DeleteStaleShards(string directory, IReadOnlyCollection<string> keep)
    {
        foreach (string path in Directory.EnumerateFiles(directory))
        {
            string name = Path.GetFileName(path);
            if (ShardPattern().IsMatch(name) && !keep.Contains(name, StringComparer.Ordinal))
                DeleteIfExists(path);
        }
    }

    private static void DeleteIfExists(string path)
    {
        if (File.Exists(path)) File.Delete(path);
    }

    [GeneratedRegex(@"^model-\d{5}-of-\d{5}\.safetensors$", RegexOptions.CultureInvariant)]
    private static partial Regex ShardPattern();
}

/// <summary>An opened checkpoint folder (single file or shards), reading tensors on demand from the right file.</summary>
public sealed class ShardedReader : ITensorSource
{
    private readonly IReadOnlyList<SafeTensorsFile> _files;
    private readonly Dictionary<string, int> _location;
    private readonly string[] _names;

    internal ShardedReader(string directory, string? indexPath, IReadOnlyList<SafeTensorsFile> files, Dictionary<string, int> location, string[] names, IReadOnlyDictionary<string, string> metadata)
    {
        (Directory, IndexPath, _files, _location, _names, Metadata) = (directory, indexPath, files, location, names, metadata);
    }

    public string Directory { get; }

    /// <summary>The index file, or null when the folder holds a single model.safetensors.</summary>
    public string? IndexPath { get; }

    public bool IsSharded => IndexPath is not null;

    /// <summary>The files tensors are read from.</summary>
    public IReadOnlyList<string> Files => _files.Select(f => f.Path).ToArray();

    public IReadOnlyList<string> Names => _names;

    /// <summary>For a sharded checkpoint the index's "metadata" (numbers as their JSON text); otherwise the file's __metadata__.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    public bool Contains(string name) => _location.ContainsKey(name);

    /// <summary>The path of the file holding <paramref name="name"/>.</summary>
    public string FileOf(string name) => FileFor(name).Path;

    public TensorInfo Info(string name) => FileFor(name).Info(name);

    public StoredTensor Read(string name) => FileFor(name).Read(name);

    public void ReadFloat32(string name, Span<float> destination) => FileFor(name).ReadFloat32(name, destination);

    public float[] ReadFloat32(string name) => FileFor(name).ReadFloat32(name);

    private SafeTensorsFile FileFor(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (_location.TryGetValue(name, out int i)) return _files[i];
        throw new CheckpointFormatException(CheckpointErrorKind.MissingTensor, IndexPath ?? _files[0].Path, name, "no tensor with this name in the checkpoint");
    }

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
    }
}
