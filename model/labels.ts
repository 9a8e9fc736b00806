/**
 * The task's classes. A dataset fact, not a model fact: the presets and the data loader both read it from
 * here, so neither has to import the other.
 * @module
 */

/** AG News classes in label-id order (Hugging Face's `ag_news`: 0 World, 1 Sports, 2 Business, 3 Sci/Tech). */
export const AG_NEWS_LABELS: readonly string[] = ["World", "Sports", "Business", "Sci/Tech"];
