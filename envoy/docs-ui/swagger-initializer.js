// Starts Swagger UI on the API description the edge serves beside this page. "Try it out" calls
// the same edge (the document's first server is "/"), with the token given to "Authorize".
window.addEventListener("load", () => {
  window.ui = SwaggerUIBundle({
    url: "/docs/openapi.json",
    dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    deepLinking: true,
    displayRequestDuration: true,
    // A link's ?url= or ?configUrl= must not point the page, and the token typed into it, at
    // another document.
    queryConfigEnabled: false,
    // The badge would send the document to validator.swagger.io.
    validatorUrl: null,
  });
});
