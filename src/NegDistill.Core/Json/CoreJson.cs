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
public sealed partial class CoreJson : JsonSerializerContext;

/// <summary>The engine's JSON-lines logs (metrics.jsonl): the same conventions, one record a line.</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals, RespectRequiredConstructorParameters = true)]
[JsonSerializable(typeof(MetricsRecord))]
public sealed partial class CoreJsonLines : JsonSerializerContext;
