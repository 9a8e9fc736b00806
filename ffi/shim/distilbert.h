// DistilBertForSequenceClassification with Hugging Face's module tree, parameter names and math
// (transformers/models/distilbert/modeling_distilbert.py), written with libtorch's C++ frontend.
// Registering submodules under HF's names makes named_parameters() produce HF's state_dict keys, e.g.
// "distilbert.transformer.layer.3.attention.q_lin.weight".
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include "distrinews.h"

namespace distrinews {

// DistilBERT hard-codes LayerNorm's eps; it is not a config field.
constexpr double kLayerNormEps = 1e-12;

// Unpadded ("packed") compute: the real tokens of a padded batch as one [T, D] matrix. Linear layers,
// LayerNorm and GELU act on each token alone, so they run on the T real tokens only; attention is the one
// step that mixes tokens, and it alone works on the padded [B, S] layout, with the key mask. The result for
// every real token is the padded forward's, with no compute spent on [PAD]: for news texts padded to the
// longest of a batch, that is about half of all the work.
struct Packing {
  torch::Tensor index;   // [T] long: flat positions b * S + s of the real tokens, in order
  torch::Tensor attend;  // [B, 1, 1, S] bool key mask; undefined when nothing is padded
  int64_t batch, seq;
  static Packing from_mask(const torch::Tensor& attention_mask);
  torch::Tensor pad(const torch::Tensor& packed) const;    // [T, F] -> [B, S, F], zeros at padding
  torch::Tensor unpad(const torch::Tensor& padded) const;  // [B, S, F] -> [T, F]
};

struct EmbeddingsImpl : torch::nn::Module {
  EmbeddingsImpl(const dn_config& c);
  torch::Tensor forward(const torch::Tensor& input_ids);
  // input_ids [B, S] -> [T, D] for the real tokens, each at its own position in its sequence.
  torch::Tensor forward_packed(const torch::Tensor& input_ids, const Packing& p);
  torch::nn::Embedding word_embeddings{nullptr}, position_embeddings{nullptr};
  torch::nn::LayerNorm LayerNorm{nullptr};
  double dropout;
};
TORCH_MODULE(Embeddings);

struct MultiHeadSelfAttentionImpl : torch::nn::Module {
  MultiHeadSelfAttentionImpl(const dn_config& c);
  // x [B, S, D]; attend [B, 1, 1, S] bool, true where a key may be attended to (undefined: everywhere).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& attend);
  // x [T, D] -> [T, D]; projections on the real tokens, attention itself on the padded layout.
  torch::Tensor forward_packed(const torch::Tensor& x, const Packing& p);
  // x [T, D] -> [B, D]: attention output of the queries at `rows` only (one per sequence), over all keys.
  torch::Tensor forward_rows(const torch::Tensor& x, const Packing& p, const torch::Tensor& rows);
  torch::Tensor attend_heads(torch::Tensor q, torch::Tensor k, torch::Tensor v, const torch::Tensor& attend);
  torch::nn::Linear q_lin{nullptr}, k_lin{nullptr}, v_lin{nullptr}, out_lin{nullptr};
  int64_t n_heads;
  double attention_dropout;
};
TORCH_MODULE(MultiHeadSelfAttention);

struct FFNImpl : torch::nn::Module {
  FFNImpl(const dn_config& c);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Linear lin1{nullptr}, lin2{nullptr};
  double dropout;
};
TORCH_MODULE(FFN);

struct TransformerBlockImpl : torch::nn::Module {
  TransformerBlockImpl(const dn_config& c);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& attend);
  torch::Tensor forward_packed(const torch::Tensor& x, const Packing& p);
  // The last block when only the [CLS] outputs are wanted: keys and values from every token, everything
  // else for the B rows in `cls_rows` only. [T, D] -> [B, D].
  torch::Tensor forward_cls(const torch::Tensor& x, const Packing& p, const torch::Tensor& cls_rows);
  MultiHeadSelfAttention attention{nullptr};
  torch::nn::LayerNorm sa_layer_norm{nullptr};
  FFN ffn{nullptr};
  torch::nn::LayerNorm output_layer_norm{nullptr};
};
TORCH_MODULE(TransformerBlock);

struct TransformerImpl : torch::nn::Module {
  TransformerImpl(const dn_config& c);
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& attend);
  torch::nn::ModuleList layer{nullptr};
};
TORCH_MODULE(Transformer);

struct DistilBertModelImpl : torch::nn::Module {
  DistilBertModelImpl(const dn_config& c);
  // Returns the last hidden state [B, S, D]. attention_mask [B, S] bool (true = real token), or an
  // undefined tensor when every position is a real token.
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask);
  Embeddings embeddings{nullptr};
  Transformer transformer{nullptr};
};
TORCH_MODULE(DistilBertModel);

struct DistilBertForSequenceClassificationImpl : torch::nn::Module {
  DistilBertForSequenceClassificationImpl(const dn_config& c);
  // Returns logits [B, num_labels].
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask);
  // The same logits through the unpadded path, for training and inference (every row's position 0,
  // [CLS], must be a real token, as the classifier reads it). Dropout draws differ from forward()'s: it is
  // applied to the packed tokens, so the random stream is consumed in another order.
  torch::Tensor forward_packed(const torch::Tensor& input_ids, const torch::Tensor& attention_mask);
  // Hugging Face's _init_weights: N(0, initializer_range) for Linear and Embedding weights, zero biases,
  // a zero padding row, LayerNorm weight 1 and bias 0.
  void init_weights(double initializer_range, int64_t pad_token_id);
  DistilBertModel distilbert{nullptr};
  torch::nn::Linear pre_classifier{nullptr}, classifier{nullptr};
  double seq_classif_dropout;
};
TORCH_MODULE(DistilBertForSequenceClassification);

}  // namespace distrinews
