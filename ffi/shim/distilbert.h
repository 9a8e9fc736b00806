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

struct EmbeddingsImpl : torch::nn::Module {
  EmbeddingsImpl(const dn_config& c);
  torch::Tensor forward(const torch::Tensor& input_ids);
  torch::nn::Embedding word_embeddings{nullptr}, position_embeddings{nullptr};
  torch::nn::LayerNorm LayerNorm{nullptr};
  double dropout;
};
TORCH_MODULE(Embeddings);

struct MultiHeadSelfAttentionImpl : torch::nn::Module {
  MultiHeadSelfAttentionImpl(const dn_config& c);
  // x [B, S, D]; attend [B, 1, 1, S] bool, true where a key may be attended to (undefined: everywhere).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& attend);
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
  // Hugging Face's _init_weights: N(0, initializer_range) for Linear and Embedding weights, zero biases,
  // a zero padding row, LayerNorm weight 1 and bias 0.
  void init_weights(double initializer_range, int64_t pad_token_id);
  DistilBertModel distilbert{nullptr};
  torch::nn::Linear pre_classifier{nullptr}, classifier{nullptr};
  double seq_classif_dropout;
};
TORCH_MODULE(DistilBertForSequenceClassification);

}  // namespace distrinews
