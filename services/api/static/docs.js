// Ferry's API reference: Swagger UI on the document this api serves. Nothing is
// loaded from another host (no validator badge, no CDN); the page's CSP says so too.
window.ui = SwaggerUIBundle({
  url: document.body.dataset.openapi,
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  showExtensions: true,
  persistAuthorization: false,
});
