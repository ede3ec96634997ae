"""The math: objectives (`objectives`: DDPM, flow matching, x-prediction, MeanFlow; velocity is the common
currency), pure solvers over an explicit time grid (`solvers`), classifier-free guidance
(`guidance`), backbone reuse across steps (`reuse`), noise -> images (`sampling`) and the editing operations (`editing`). Knows nothing of
recipes."""

from pixdiff.config.exports import exports, lazy_exports

_EXPORTS = {
    **exports("pixdiff.diffusion.objectives", "DDPM", "FlowMatching", "FrequencyAwareFlowMatching", "XPrediction", "MeanFlow",
              "mean_flow_target", "gaussian_model", "gaussian_mean_flow"),
    **exports("pixdiff.diffusion.solvers", "SOLVERS", "shifted_grid", "euler", "heun", 'ab2', "ddim", "ddpm_ancestral", "euler_maruyama", "odeint",
              "meanflow"),
    **exports("pixdiff.diffusion.guidance", "cfg"),
    **exports("pixdiff.diffusion.reuse", "Reuse", "parse_reuse"),
    **exports("pixdiff.diffusion.sampling", "guided_velocity", "inference_network", "sample_images"),
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
