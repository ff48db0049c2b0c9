using System.Text.Json.Serialization;
using NegDistill.Model;
using NegDistill.Train;

namespace NegDistill.Json;

/// <summary>Every JSON file the engine writes or reads, as records with System.Text.Json source
/// generation: snake_case names, NaN and ±Infinity as the named literals, required constructor
/// parameters enforced. Indented for files a person opens.</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, WriteIndented = true,
    NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals, RespectRequiredConstructorParameters = true,
    RespectNullableAnnotations = true)]
[JsonSerializable(typeof(NatFolderConfig))]
[JsonSerializable(typeof(HfLlamaConfig))]
[JsonSerializable(typeof(int))]
public sealed partial class CoreJson : JsonSerializerContext;

/// <summary>The engine's JSON-lines logs (metrics.jsonl): the same conventions, one record a line.</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals, RespectRequiredConstructorParameters = true)]
[JsonSerializable(typeof(MetricsRecord))]
public sealed partial class CoreJsonLines : JsonSerializerContext;

/// <summary>The fields of a Hugging Face LLaMA config.json that NegDistill writes and reads (others are
/// ignored when read). Optional ones are nullable; the token ids stay JSON (some configs hold a list).</summary>
public sealed record HfLlamaConfig
{
    public string[]? Architectures { get; set; }
    public string? ModelType { get; set; }
    public int? HiddenSize { get; set; }
    public int? NumHiddenLayers { get; set; }
    public int? NumAttentionHeads { get; set; }
    public int? NumKeyValueHeads { get; set; }
    public int? IntermediateSize { get; set; }
    public int? VocabSize { get; set; }
    public int? MaxPositionEmbeddings { get; set; }
    public float? RmsNormEps { get; set; }
    public float? RopeTheta { get; set; }
    /// <summary>transformers 4's RoPE scaling object (null: plain RoPE).</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public System.Text.Json.JsonElement? RopeScaling { get; set; }
    /// <summary>transformers 5's RoPE settings: rope_theta and rope_type in one object.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public System.Text.Json.JsonElement? RopeParameters { get; set; }
    public System.Text.Json.JsonElement? BosTokenId { get; set; }
    public System.Text.Json.JsonElement? EosTokenId { get; set; }
    public string? HiddenAct { get; set; }
    public bool? TieWordEmbeddings { get; set; }
    public string? TorchDtype { get; set; }
}
